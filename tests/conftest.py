"""Suite-wide test settings."""

from hypothesis import settings

# Speed is measured in bench/, never asserted in tests: hypothesis's per-example deadline is a
# timing assertion that fails on a loaded machine (the CI runner, parallel jobs), so it is off.
settings.register_profile("eir", deadline=None)
settings.load_profile("eir")
