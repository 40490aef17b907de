"""Host network tests: every test gets its own CNI network (tests.support.network)."""

from tests.support.network import test_network  # noqa: F401  (a fixture)
