"""The test suite (a package, so tests/flows is tests.flows and never shadows the project's flows package)."""
