"""Cinder: rbdfail.yaml from a Cinder deployment (importer.py), and what Cinder and Nova need
after a switch (steps.py)."""
