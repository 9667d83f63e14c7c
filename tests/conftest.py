"""Every test's fixtures come from ``tests/support``."""

pytest_plugins = ["tests.support.brokers", "tests.support.services", "tests.support.stack"]
