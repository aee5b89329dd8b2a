"""Units of the API and provisioning layer: tokens, progress, audit queries, JSON entries,
the token configuration."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.api.tokens import TokenTable, parse_token, read_token_file
from gateway.config import ConfigError, load_config
from gateway.lists import (
    ListError,
    ListStore,
    entry_from_json,
    entry_id,
    make_entry,
    parse_entry_id,
)
from gateway.progress import Progress, ProgressPrinter
from gateway.provisioning import CursorError, Provisioning, decode_cursor, encode_cursor
from tests.e2e.conftest import gateway_env

SECRET = "s3cret-s3cret-s3cret"


def test_token_format_and_roles() -> None:
    t = parse_token(f"oss:read+write:{SECRET}")
    assert t.name == "oss" and t.roles == {"read", "write"} and SECRET.encode() not in t.digest
    for bad, problem in [
        ("oss:read", "NAME:ROLES:SECRET"),
        (f"oss:admin:{SECRET}", "roles 'admin'"),
        (f"oss::{SECRET}", "roles ''"),
        ("oss:read:short", "at least 16"),
        (f"o s:read:{SECRET}", "token name"),
        ("oss:read:" + "x" * 15 + " ", "at least 16"),
    ]:
        with pytest.raises(ValueError, match=problem) as info:
            parse_token(bad)
        assert SECRET not in str(info.value)


@given(st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=16, max_size=40),
                min_size=1, max_size=8, unique=True), st.data())
def test_authenticate_finds_exactly_the_token(secrets: list[str], data: st.DataObject) -> None:
    table = TokenTable(parse_token(f"t{i}:read:{s}") for i, s in enumerate(secrets))
    i = data.draw(st.integers(0, len(secrets) - 1))
    found = table.authenticate(secrets[i])
    assert found is not None and found.name == f"t{i}"
    assert table.authenticate(secrets[i][:-1]) is None or secrets[i][:-1] in secrets
    assert table.authenticate(secrets[i] + "x") is None or secrets[i] + "x" in secrets


def test_token_file_and_config_errors(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text(f"# operators\nnoc:read:{SECRET}  # the NOC\n\nbad line\n")
    with pytest.raises(ValueError, match=r"tokens: line 4: a token is NAME:ROLES:SECRET"):
        read_token_file(f)
    f.write_text(f"noc:read:{SECRET}\n")
    assert [t.name for t in read_token_file(f)] == ["noc"]
    env = gateway_env(tmp_path / "var")
    config = load_config(None, env={**env, "EIR_API_TOKEN_FILE": str(f),
                                    "EIR_API_TOKENS": f"oss:read+write:{SECRET}x"})
    assert sorted(t.name for t in config.api.tokens) == ["noc", "oss"]
    with pytest.raises(ConfigError, match="same secret"):
        load_config(None, env={**env, "EIR_API_TOKEN_FILE": str(f),
                               "EIR_API_TOKENS": f"oss:read:{SECRET}"})
    with pytest.raises(ConfigError, match=r"EIR_API_TOKENS \(api.tokens\): token name 'noc'"):
        load_config(None, env={**env, "EIR_API_TOKENS": f"noc:read:{SECRET},noc:pii:{SECRET}y"})
    with pytest.raises(ConfigError, match=r"api\.listen"):
        load_config(None, env={**env, "EIR_API_LISTEN": "localhost"})
    with pytest.raises(ConfigError, match=r"needs both api\.tls_cert and api\.tls_key"):
        load_config(None, env={**env, "EIR_API_TLS_KEY": str(f)})


def test_progress_rate_eta_and_printer() -> None:
    now = [100.0]
    lines = io.StringIO()
    p = Progress(1000, ProgressPrinter(lines, "f.csv"), clock=lambda: now[0])
    for step in range(1, 11):
        now[0] += 1.0
        p.advance(step * 100 - 50, step * 10)
    p.finish()
    out = lines.getvalue().splitlines()
    # one line per tenth (not a TTY), the last at 100%
    assert len(out) == 11 and out[-1].startswith("f.csv: 100.0% 100 rows, 10 rows/s")
    snap = p.as_json()
    assert snap["percent"] == 100.0 and snap["eta_seconds"] == 0.0
    q = Progress(1000, clock=lambda: now[0])
    now[0] += 2.0
    q.advance(250, 25)
    assert q.eta == pytest.approx(6.0) and q.rate == pytest.approx(12.5)


def test_entry_ids_round_trip() -> None:
    for args in (("black", "imei", "35209900176148"), ("grey", "tac", "35000001"),
                 ("white", "pair", "35209900176148", "001010000000001"),
                 ("grey", "range", "35332011000000-35332011009999")):
        e = make_entry(*args)
        assert parse_entry_id(e.colour.value, entry_id(e)) == e
    with pytest.raises(ListError, match="KIND:VALUE"):
        parse_entry_id("black", "35209900176148")


def test_entry_from_json_names_fields() -> None:
    e = entry_from_json({"list": "black", "kind": "imei", "value": "35209900176148",
                         "imsi": None, "created": "2024-01-02T03:04:05Z"})
    assert e.created == 1_704_164_645.0 and e.updated is None
    for item, field in [([], "body"), ({"list": "black"}, "kind"),
                        ({"list": "black", "kind": "tac", "value": "35000001", "x": "1"}, "x"),
                        ({"list": "black", "kind": "tac", "value": "35000001",
                          "updated": None}, "updated")]:
        with pytest.raises(ListError) as info:
            entry_from_json(item)
        assert info.value.field == field


def test_cursor_round_trip_and_forgery(tmp_path: Path) -> None:
    e = make_entry("white", "pair", "35209900176148", "001010000000001")
    assert decode_cursor(encode_cursor(e)) == ("pair", "white", e.first, e.last, e.imsi)
    for forged in ("x", "bm9wZQ", encode_cursor(e)[:-3]):
        with pytest.raises(CursorError):
            decode_cursor(forged)


def test_service_import_jsonl_export_and_audit(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "l.sqlite")
    service = Provisioning(store)
    try:
        src = tmp_path / "in.jsonl"
        src.write_text('{"list":"black","kind":"tac","value":"35000001","reason":"r"}\n\n'
                       '{"list":"white","kind":"pair","value":"35209900176148",'
                       '"imsi":"001010000000001"}\n')
        assert service.import_file(src, "jsonl", "cli:me") == 2
        out = io.StringIO()
        assert service.export(out, "jsonl") == 2
        dump = tmp_path / "dump.jsonl"
        dump.write_text(out.getvalue())
        assert service.import_file(dump, "jsonl", "cli:me") == 2  # the export imports again
        src.write_text('{"list":"black","kind":"tac","value":"35000001"}\n{"list":')
        with pytest.raises(ListError, match=r"in.jsonl: line 2: "):
            service.import_file(src, "jsonl", "cli:me")
        # Deep nesting (RecursionError in json.loads) and a time no export could write: each a
        # ListError naming the line, nothing imported.
        for bad in ("[" * 100_000, '{"list":"black","kind":"tac","value":"35000002",'
                    '"created":"0001-01-01T00:00:00+01:00"}'):
            src.write_text('{"list":"black","kind":"tac","value":"35000003"}\n' + bad + "\n")
            with pytest.raises(ListError, match=r"in.jsonl: line 2: "):
                service.import_file(src, "jsonl", "cli:me")
        assert service.export(io.StringIO(), "jsonl") == 2
        [first, second] = service.audit(action="import")
        assert first.actor == "cli:me" and first.after is not None
        assert first.after["entries"] == 2 and len(first.after["sha256"]) == 64
        assert service.audit(after=second.seq) == []
    finally:
        store.close()
