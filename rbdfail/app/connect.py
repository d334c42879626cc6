"""How the program reaches a real site: the `connect` function handed to every use case."""

from __future__ import annotations

from rbdfail import ceph
from rbdfail.cluster import Cluster
from rbdfail.config import SiteConfig, check_conf_readable


def connect_to_ceph(site: SiteConfig, timeout: float) -> Cluster:
    """ceph.connect, after making sure the site's conf can be read (a local mistake, exit 2,
    never a site taken as lost)."""
    check_conf_readable(site)
    return ceph.connect(site, timeout)
