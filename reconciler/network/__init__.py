"""Pod networking through CNI plugins: network configs, the plugin invoker, host ports.

``CniNetwork`` (in ``driver``) is the NetworkDriver; ``config`` reads and writes the
``.conflist`` files; ``cni`` runs plugin binaries per the CNI spec; ``ports`` turns hostPorts
into port mappings and finds who holds a port; ``masq`` cleans what the bridge plugin leaks.
"""

from reconciler.network.driver import CniNetwork

__all__ = ["CniNetwork"]
