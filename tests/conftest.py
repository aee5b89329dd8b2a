"""Suite-wide test settings."""

from hypothesis import settings

# One throwaway PostgreSQL for the whole session (initdb takes seconds): defined here, once, so
# that every module shares it (a fixture imported into each module is one per module).
from tests.postgres_server import postgres_dsn, postgres_server

__all__ = ["postgres_dsn", "postgres_server"]

# Speed is measured in bench/, never asserted in tests: hypothesis's per-example deadline is a
# timing assertion that fails on a loaded machine (the CI runner, parallel jobs), so it is off.
settings.register_profile("eir", deadline=None)
settings.load_profile("eir")
