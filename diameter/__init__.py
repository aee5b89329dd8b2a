"""Diameter base protocol (RFC 6733), sans-IO, with asyncio transports under ``transport``."""

from eir_compiled.finder import install

install()  # the compiled build of the hot modules, where one matches the sources
