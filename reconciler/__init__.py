"""podplay: run Kubernetes YAML on one Linux host, no cluster and no daemon.

Library entry points (import what you need; the package import itself is cheap):

    from reconciler.manifests import load_manifests
    from reconciler.desired import build_desired
    from reconciler.reconcile import reconcile_once
"""

__version__ = "0.1.0"
