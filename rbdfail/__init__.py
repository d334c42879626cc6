"""rbdfail: fail over Ceph RBD mirroring between two sites, and back."""
