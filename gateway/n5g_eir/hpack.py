"""HPACK (RFC 7541) for the server side of N5g-eir: a full decoder and a stateless encoder.

The decoder keeps the dynamic table the client's encoder builds (§2.3, §4), decodes integers
(§5.1), strings (§5.2) and Huffman codes (§5.2, Appendix B) and every field representation
(§6); any violation is a :class:`HpackError` (RFC 9113 §4.3: a COMPRESSION_ERROR connection
error). Huffman strings are decoded a byte at a time through a table of the code tree's
states, built once at import from Appendix B's code; a string that begins with a known prefix
(the service's request path, given by the caller) resumes after the prefix's code.

The encoder only emits static-table indexes and literals without indexing (§6.2.2), so it never
touches a dynamic table: a response's header block depends on the response alone and is encoded
once per distinct response.

The static table and the Huffman code (Appendix A, Appendix B) are taken from the ``hpack``
distribution's data, not retyped.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

from gateway.n5g_eir.errors import HpackError as HpackError

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE  # Appendix A, 1-based
_STATIC_LEN = len(STATIC_TABLE)
_STATIC_INDEXED = 0x80 + _STATIC_LEN  # §6.1: the last one-byte indexed field of the static table
ENTRY_OVERHEAD = 32  # §4.1
_MAX_INTEGER = 1 << 28  # far above any size this server accepts; bounds the loop


# --- Huffman (Appendix B) -------------------------------------------------------------------

def _huffman_table() -> tuple[list[int], list[int], list[bool]]:
    """Nibble transitions of the Huffman code tree.

    States are the tree's internal nodes (0: the root). For state ``s`` and nibble ``n``, entry
    ``16 * s + n`` gives the next state (-1: the EOS symbol was decoded, an error, §5.2) and the
    symbol completed on the way (-1: none; a code is at least 5 bits, so at most one per
    nibble). ``accepting[s]``: the bits since the last symbol are all ones and fewer than 8,
    i.e. valid padding if the string ends there.
    """
    children: list[list[int]] = [[0, 0]]  # >= 0: internal node; < 0: -(symbol + 1)
    for symbol, (code, length) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH, strict=True)):
        node = 0
        for shift in range(length - 1, -1, -1):
            bit = (code >> shift) & 1
            if shift == 0:
                children[node][bit] = -(symbol + 1)
            else:
                if children[node][bit] == 0:
                    children.append([0, 0])
                    children[node][bit] = len(children) - 1
                node = children[node][bit]
    accepting = [False] * len(children)
    node, depth = 0, 0
    while node >= 0 and depth < 8:  # the all-ones path from the root
        accepting[node] = True
        node, depth = children[node][1], depth + 1
    next_state = [0] * (16 * len(children))
    emitted = [-1] * (16 * len(children))
    for state in range(len(children)):
        for nibble in range(16):
            node, symbol = state, -1
            for shift in (3, 2, 1, 0):
                child = children[node][(nibble >> shift) & 1]
                if child < 0:
                    if -child - 1 == 256:  # EOS
                        node = -1
                        break
                    symbol, node = -child - 1, 0
                else:
                    node = child
            next_state[16 * state + nibble] = node
            emitted[16 * state + nibble] = symbol
    return next_state, emitted, accepting


def _byte_table(
    next_state: list[int], emitted: list[int]
) -> list[tuple[int, bytes] | None]:
    """Two nibble steps composed, so decoding takes one look-up per input byte. States are
    kept multiplied by 256: entry ``s + byte`` is (the next state times 256, the symbols
    completed: at most two), or None where the EOS symbol was decoded. Equal entries are one
    object (the table has 65,536)."""
    shared: dict[tuple[int, bytes], tuple[int, bytes]] = {}
    table: list[tuple[int, bytes] | None] = []
    for state in range(len(next_state) // 16):
        for high in range(16):
            i = 16 * state + high
            middle = next_state[i]
            first = bytes((emitted[i],)) if emitted[i] >= 0 else b""
            for low in range(16):
                if middle < 0:
                    table.append(None)
                    continue
                j = 16 * middle + low
                if next_state[j] < 0:
                    table.append(None)
                    continue
                entry = (next_state[j] << 8,
                         first + bytes((emitted[j],)) if emitted[j] >= 0 else first)
                table.append(shared.setdefault(entry, entry))
    return table


_NIBBLE_NEXT, _NIBBLE_EMIT, _ACCEPTING = _huffman_table()
_TRANSITIONS = _byte_table(_NIBBLE_NEXT, _NIBBLE_EMIT)
_ACCEPTING_AT = frozenset(state << 8 for state, ok in enumerate(_ACCEPTING) if ok)


class KnownPrefix(NamedTuple):
    """A string most Huffman literals of a connection begin with (the service's request path),
    decoded once: a literal that starts with ``code`` resumes in ``state`` after ``decoded``."""

    code: bytes  # the whole bytes of the prefix's Huffman code
    state: int  # the decoding state after them (times 256)
    decoded: bytes  # the symbols they complete (the prefix, less a symbol cut by a byte)


def known_prefix(text: bytes) -> KnownPrefix:
    code = bits = 0
    for symbol in text:
        code = (code << REQUEST_CODES_LENGTH[symbol]) | REQUEST_CODES[symbol]
        bits += REQUEST_CODES_LENGTH[symbol]
    whole = bits // 8
    encoded = (code >> (bits - 8 * whole)).to_bytes(whole, "big")
    state, decoded = _run(encoded, 0, [])
    return KnownPrefix(encoded, state, decoded)


def _run(data: bytes, state: int, out: list[bytes]) -> tuple[int, bytes]:
    """Decode ``data`` from ``state``, after the symbols in ``out``: (state, all symbols)."""
    table = _TRANSITIONS
    append = out.append
    try:
        for byte in data:
            state, symbols = table[state | byte]  # type: ignore[misc]
            append(symbols)
    except TypeError:  # a None entry: no test per byte on the way
        raise HpackError("Huffman string contains EOS") from None
    return state, b"".join(out)


def huffman_decode(data: bytes, known: tuple[KnownPrefix, ...] = ()) -> bytes:
    """§5.2: a Huffman-coded string, one table look-up per byte; from past the prefix when it
    begins with the code of one of ``known``."""
    for prefix in known:
        if data.startswith(prefix.code):
            state, decoded = _run(data[len(prefix.code):], prefix.state, [prefix.decoded])
            break
    else:
        state, decoded = _run(data, 0, [])
    if state not in _ACCEPTING_AT:
        raise HpackError("Huffman padding is not a prefix of EOS shorter than 8 bits")
    return decoded


# --- decoding ----------------------------------------------------------------------------------

def _integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """§5.1: an integer with an N-bit prefix starting at ``data[pos]``; returns (value, end)."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("integer runs past the end of the block")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if value > _MAX_INTEGER:
            raise HpackError("integer too large")
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:  # §5.1 limits in octet length too: five after the prefix at most
            raise HpackError("integer encoding too long")


def _string(data: bytes, pos: int, known: tuple[KnownPrefix, ...]) -> tuple[bytes, int]:
    """§5.2: a string literal, Huffman-coded when its H bit is set."""
    if pos >= len(data):
        raise HpackError("string missing at the end of the block")
    first = data[pos]
    if first & 0x7F == 0x7F:
        length, pos = _integer(data, pos, 7)
    else:  # a length below 127: its one byte (the usual case, read inline)
        length, pos = first & 0x7F, pos + 1
    end = pos + length
    if end > len(data):
        raise HpackError("string runs past the end of the block")
    raw = data[pos:end]
    return (huffman_decode(raw, known) if first & 0x80 else raw), end


_BLOCK_CACHE_SIZE = 1024
# Octets of blocks and of their kept fields remembered per connection: without it, a client
# sending distinct 16 KB blocks made one connection hold 1,024 of them (~18 MB).
_BLOCK_CACHE_BYTES = 256 * 1024


class HpackDecoder:
    """The decoding context of one connection (§2.2): the dynamic table the peer fills.

    A block that leaves the dynamic table as it was (indexed fields and literals without
    indexing: clients that do not index ``:path``, as nghttp2 does not, send such blocks for a
    handset checked again) is remembered with the table's generation, and the same bytes
    decode to the same headers while the table has not changed since (§2.3.3: an index means
    what the table holds at the time).
    """

    def __init__(self, max_table_size: int = 4096, known_prefixes: tuple[bytes, ...] = ()) -> None:
        # SETTINGS_HEADER_TABLE_SIZE we announced: the most the peer may set the table to.
        self.settings_table_size = max_table_size
        self.max_size = max_table_size
        self.size = 0
        self.entries: deque[tuple[bytes, bytes]] = deque()
        self.generation = 0  # counts the changes of the dynamic table
        self._blocks: dict[bytes, tuple[int, int, list[tuple[bytes, bytes]], int]] = {}
        self._blocks_bytes = 0  # octets _blocks holds, as _BLOCK_CACHE_BYTES counts them
        # Strings most Huffman literals begin with, longest first (KnownPrefix).
        self._known = tuple(known_prefix(p) for p in sorted(known_prefixes, key=len,
                                                               reverse=True))

    def _get(self, index: int) -> tuple[bytes, bytes]:
        if index == 0:
            raise HpackError("index 0")  # §6.1
        if index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_LEN - 1
        if dynamic >= len(self.entries):
            raise HpackError(f"index {index} beyond the tables")  # §2.3.3
        return self.entries[dynamic]

    def _add(self, name: bytes, value: bytes) -> None:
        # §4.4: evict from the end until the new entry fits; larger than the table: empty it.
        self.generation += 1
        size = len(name) + len(value) + ENTRY_OVERHEAD
        while self.entries and self.size + size > self.max_size:
            old_name, old_value = self.entries.pop()
            self.size -= len(old_name) + len(old_value) + ENTRY_OVERHEAD
        if size <= self.max_size:
            self.entries.appendleft((name, value))
            self.size += size

    def _resize(self, size: int) -> None:
        if size > self.settings_table_size:
            raise HpackError(f"table size update {size} above the announced "
                             f"{self.settings_table_size}")  # §4.2, §6.3
        self.generation += 1
        self.max_size = size
        while self.entries and self.size > size:
            old_name, old_value = self.entries.pop()
            self.size -= len(old_name) + len(old_value) + ENTRY_OVERHEAD

    def _literal(self, block: bytes, pos: int, prefix_bits: int) -> tuple[bytes, bytes, int]:
        """§6.2: a name (indexed, or a string when the index is 0) and a value string."""
        index, pos = _integer(block, pos, prefix_bits)
        if index:
            name = self._get(index)[0]
        else:
            name, pos = _string(block, pos, self._known)
        value, pos = _string(block, pos, self._known)
        return name, value, pos

    def decode(self, block: bytes, max_list_size: int) -> tuple[list[tuple[bytes, bytes]], int]:
        """The header list of one block (§3.2) and its size (§4.1 rule, RFC 9113 §6.5.2).

        The whole block is decoded even past ``max_list_size`` (the table must stay in step
        with the peer's); fields past the limit are not kept. The list may be shared with
        earlier calls for the same block: callers do not change it.
        """
        cached = self._blocks.get(block)
        if cached is not None and cached[0] == self.generation and cached[1] == max_list_size:
            return cached[2], cached[3]
        generation = self.generation
        headers, list_size = self._decode(block, max_list_size)
        if self.generation == generation:
            cost = len(block) + min(list_size, max_list_size)
            if (len(self._blocks) >= _BLOCK_CACHE_SIZE
                    or self._blocks_bytes + cost > _BLOCK_CACHE_BYTES):
                self._blocks.clear()
                self._blocks_bytes = 0
            if cost <= _BLOCK_CACHE_BYTES:
                self._blocks[block] = (generation, max_list_size, headers, list_size)
                self._blocks_bytes += cost
        return headers, list_size

    def _decode(self, block: bytes, max_list_size: int) -> tuple[list[tuple[bytes, bytes]], int]:
        headers: list[tuple[bytes, bytes]] = []
        list_size = 0
        pos, end = 0, len(block)
        leading = True  # §4.2: size updates only at the start of a block
        while pos < end:
            byte = block[pos]
            if 0x80 < byte <= _STATIC_INDEXED:  # §6.1 a static table entry: one byte
                name, value = STATIC_TABLE[byte - 0x81]
                pos += 1
            elif byte & 0x80:  # §6.1 indexed field
                if byte == 0xFF:
                    index, pos = _integer(block, pos, 7)
                else:  # an index below 127: its one byte
                    index, pos = byte & 0x7F, pos + 1
                name, value = self._get(index)
            elif byte & 0x40:  # §6.2.1 literal with incremental indexing
                name, value, pos = self._literal(block, pos, 6)
                self._add(name, value)
            elif byte & 0x20:  # §6.3 dynamic table size update
                if not leading:
                    raise HpackError("table size update after a header field")
                size, pos = _integer(block, pos, 5)
                self._resize(size)
                continue
            else:  # §6.2.2 without indexing, §6.2.3 never indexed
                name, value, pos = self._literal(block, pos, 4)
            leading = False
            list_size += len(name) + len(value) + ENTRY_OVERHEAD
            if list_size <= max_list_size:
                headers.append((name, value))
        return headers, list_size


# --- encoding ----------------------------------------------------------------------------------

_STATIC_NAME: dict[bytes, int] = {}
_STATIC_FIELD: dict[tuple[bytes, bytes], int] = {}
for _i, (_name, _value) in enumerate(STATIC_TABLE, 1):
    _STATIC_NAME.setdefault(_name, _i)
    _STATIC_FIELD.setdefault((_name, _value), _i)


def _encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> bytes:
    """A header block of static-table indexes (§6.1) and literals without indexing (§6.2.2),
    strings without Huffman coding: no state, so the same headers always give the same bytes."""
    out = bytearray()
    for name, value in headers:
        index = _STATIC_FIELD.get((name, value))
        if index is not None:
            out += _encode_integer(index, 7, 0x80)
            continue
        name_index = _STATIC_NAME.get(name)
        if name_index is not None:
            out += _encode_integer(name_index, 4, 0x00)
        else:
            out.append(0x00)
            out += _encode_integer(len(name), 7, 0x00) + name
        out += _encode_integer(len(value), 7, 0x00) + value
    return bytes(out)


def table_size_update(size: int) -> bytes:
    """§6.3: a dynamic table size update, put first in a block after the peer's
    SETTINGS_HEADER_TABLE_SIZE changed (our table stays empty; 0 is always within it)."""
    return _encode_integer(size, 5, 0x20)
