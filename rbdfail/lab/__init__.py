"""The lab: a real two-site Ceph on this machine (`twosite`), and the ways it fails a site
(`disasters`, importable without the lab's daemons). Its command line is `rbdfail/cli/lab.py`."""
