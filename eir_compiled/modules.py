"""The modules ``make compile`` builds with mypyc: one row per module, with why it is there.

Add a row to compile another module (it must type-check under mypyc: no monkeypatched functions,
no interpreted subclasses of its classes, no ``__dict__`` on its instances). A module belongs
here only where ``bench/instructions.py`` shows it pays; everything else stays interpreted.
"""

from __future__ import annotations

from typing import NamedTuple


class CompiledModule(NamedTuple):
    module: str
    why: str


COMPILED_MODULES: tuple[CompiledModule, ...] = (
    CompiledModule("diameter.codec", "decode and encode of every message"),
    CompiledModule("diameter.framing", "splits every read into messages"),
    CompiledModule("diameter.duplicates", "every request's duplicate check"),
    CompiledModule("diameter.watchdog", "every message resets Tw"),
    CompiledModule("diameter.routing", "every request's Destination checks"),
    CompiledModule("diameter.peek", "header peeks before decoding"),
    CompiledModule("diameter.peer", "the peer state machine: every message"),
    CompiledModule("diameter.answer", "answers' headers and error answers"),
    CompiledModule("diameter.overload", "every 3004 of an overloaded node, from its template"),
    CompiledModule("diameter.lane", "every request of a learnt shape: one walk of its octets"),
    CompiledModule("diameter.deferred", "every answer given later (a shared clone count's check)"),
    CompiledModule("diameter.reads", "every read served: the budget, each handler's call"),
    CompiledModule("gateway.s13", "every MICR read and its MICA assembled"),
    CompiledModule("gateway.classify", "every check's pipeline and decision cache"),
    CompiledModule("gateway.imei", "IMEI parsing and the Luhn digit of every check"),
    CompiledModule("gateway.policy", "reason -> Equipment-Status of every decision"),
    CompiledModule("gateway.tac", "the TAC look-up of every fresh check"),
    CompiledModule("gateway.lists", "the operator lists' snapshot look-ups"),
    CompiledModule("gateway.sorted_imeis", "every check's exact-IMEI look-up (bucket table)"),
    CompiledModule("gateway.hot_counters", "every check's and Diameter message's counters"),
    CompiledModule("gateway.shared_count", "every check waiting for the shared clone count"),
    CompiledModule("gateway.clone_tracker", "every check's clone count (the shared tracker's base)"),
    CompiledModule("gateway.redis_clone", "every check's sighting batched for the shared count"),
    CompiledModule("gateway.resp", "the shared count's reply: an integer a check"),
    CompiledModule("registry_client.local", "the embedded registry's verdict of a fresh check"),
    CompiledModule("registry_client.wire", "IMEI normalisation and declared ranges"),
    CompiledModule("registry_client.bounded", "the registry's verdict cache"),
    CompiledModule("gateway.n5g_eir.frames", "splits every N5g-eir read into HTTP/2 frames"),
    CompiledModule("gateway.n5g_eir.hpack", "every request's header block, Huffman :path"),
    CompiledModule("gateway.n5g_eir.http2", "the HTTP/2 session: every frame and response"),
    CompiledModule("gateway.n5g_eir.request", "every GetEquipmentStatus query"),
    CompiledModule("gateway.n5g_eir.identities", "every PEI and SUPI"),
)
