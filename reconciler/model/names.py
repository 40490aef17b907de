"""Names shared across layers that must stay cheap to import: podplay's annotations (our own
knobs live under podplay.io/) and the default network."""

ANNOTATION_PREFIX = "podplay.io/"
ANN_NETWORK = "podplay.io/network"
ANN_PORT_PER_REPLICA = "podplay.io/host-port-per-replica"
DEFAULT_NETWORK = "podplay"
