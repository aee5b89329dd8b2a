"""A real gateway on loopback for the N5g-eir tests (the e2e suite's fixture)."""

from tests.e2e.conftest import start_gateway

__all__ = ["start_gateway"]
