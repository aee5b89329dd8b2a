"""Fuzz target of what the provisioning API reads from a client, sans-IO: a JSON body (an
entry: ``entry_from_json``), an entry named in a URL path (``parse_entry_id``), a pagination
cursor (``decode_cursor``) and an IMEI in a path (``parse_body``).

One input is split at its first NUL: the part before is the JSON body; the part after feeds the
path and cursor readers. Each reader either gives a value or raises its documented error
(ListError, CursorError, None for an IMEI); an entry read from a body must render back to JSON
(``entry_json``: what the API answers and the export writes) and read back to the same entry.
Any other exception, or a broken property, is a finding.
"""

from __future__ import annotations

import json

from gateway.lists import ListEntry, ListError, entry_from_json, entry_json, parse_entry_id
from gateway.provisioning import CursorError, decode_cursor, encode_cursor
from gateway.report import parse_body


def _same(a: ListEntry, b: ListEntry) -> bool:
    return (a.colour, a.kind, a.first, a.last, a.imsi, a.reason) == (
        b.colour, b.kind, b.first, b.last, b.imsi, b.reason)


class ApiHarness:
    def run(self, data: bytes) -> None:
        body, _, rest = data.partition(b"\0")
        try:
            item = json.loads(body)
        except ValueError:
            item = None
        if item is not None:
            self._entry(item)
        text = rest.decode("utf-8", "replace")
        colour, _, entry = text.partition("/")
        try:
            parsed = parse_entry_id(colour, entry)
        except ListError:
            pass
        else:
            assert _same(parse_entry_id(parsed.colour.value, f"{parsed.kind.value}:"
                                        f"{parsed.value}"
                                        + (f":{parsed.imsi}" if parsed.imsi else "")), parsed)
        try:
            decode_cursor(text)
        except CursorError:
            pass
        imei = parse_body(text)
        assert imei is None or imei.check_digit_ok

    def _entry(self, item: object) -> None:
        try:
            entry = entry_from_json(item)
        except ListError:
            return
        shown = entry_json(entry)
        assert shown is not None
        json.dumps(shown)
        # A stored entry always has its times; one read from a body may not (null: left out).
        again = entry_from_json({k: v for k, v in shown.items()
                                 if k != "source" and (v is not None or k == "imsi")})
        assert _same(again, entry), (entry, again)
        assert (again.created, again.updated) == (entry.created, entry.updated) or (
            # entry_json writes whole seconds
            int(again.created or 0) == int(entry.created or 0)
            and int(again.updated or 0) == int(entry.updated or 0)
        ), (entry, again)
        encode_cursor(entry)
