"""The provisioning API of a running gateway over loopback HTTP: entries, roles, audit, checks,
imports and exports. Every answer that is an error must be RFC 9457 problem+json."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main as cli_main
from gateway.imei import luhn_check_digit
from tests.api.conftest import ADMIN, OPS, VIEWER, Api
from tests.e2e.conftest import connect_mme
from tests.e2e.test_s13 import status_of

IMEI = "35209900000018"  # clean: TAC 35209900 is in the sample TAC file, nothing else
IMSI = "001010000000001"
IMEI15 = IMEI + luhn_check_digit(IMEI)
PROBLEM = "application/problem+json"


async def _entries(api: Api, **query: str) -> list[dict[str, Any]]:
    out, cursor = [], ""
    while True:
        q = "&".join(f"{k}={v}" for k, v in {**query, "cursor": cursor}.items() if v)
        status, body, _ = await api.call("GET", f"/v1/lists/entries?{q}")
        assert status == 200
        out += body["entries"]
        if body["next_cursor"] is None:
            return out
        cursor = body["next_cursor"]


async def test_entry_life_cycle_is_audited(api: Api) -> None:
    new = {"list": "black", "kind": "imei", "value": IMEI15, "reason": "stolen"}
    status, body, headers = await api.call("POST", "/v1/lists/entries", json=new)
    assert status == 201 and body["value"] == IMEI and body["source"] is None
    assert headers["Location"] == f"/v1/lists/black/entries/imei:{IMEI}"
    status, body, headers = await api.call("POST", "/v1/lists/entries", json=new)
    assert status == 409 and headers["Content-Type"].startswith(PROBLEM)
    status, body, _ = await api.call("GET", f"/v1/lists/black/entries/imei:{IMEI}", VIEWER)
    assert status == 200 and body["reason"] == "stolen"
    status, body, _ = await api.call("PUT", f"/v1/lists/black/entries/imei:{IMEI}",
                                     json={"reason": "found again"})
    assert status == 200 and body["reason"] == "found again"
    status, _, _ = await api.call("PUT", "/v1/lists/grey/entries/tac:35000001", json={})
    assert status == 201
    status, _, _ = await api.call("DELETE", f"/v1/lists/black/entries/imei:{IMEI}")
    assert status == 204
    status, body, _ = await api.call("DELETE", f"/v1/lists/black/entries/imei:{IMEI}")
    assert status == 404 and body["status"] == 404
    status, body, _ = await api.call("GET", "/v1/audit?actor=api:ops")
    records = body["records"]
    assert [(r["action"], r["target"]) for r in records] == [
        ("create", f"black/imei:{IMEI}"), ("update", f"black/imei:{IMEI}"),
        ("create", "grey/tac:35000001"), ("delete", f"black/imei:{IMEI}"),
    ]
    update = records[1]
    assert update["before"]["reason"] == "stolen" and update["after"]["reason"] == "found again"
    assert records[3]["after"] is None and records[3]["before"]["reason"] == "found again"
    # Paging: after= the last seq of a page.
    status, body, _ = await api.call("GET", f"/v1/audit?after={records[1]['seq']}&limit=1")
    assert [r["seq"] for r in body["records"]] == [records[2]["seq"]]
    assert body["next_after"] == records[2]["seq"]


async def test_audit_log_is_append_only(api: Api) -> None:
    await api.call("POST", "/v1/lists/entries", json={"list": "grey", "kind": "tac",
                                                       "value": "35000001"})
    conn = sqlite3.connect(api.gateway.config.lists.database)
    try:
        for statement in ("UPDATE audit SET actor = 'someone else'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
    finally:
        conn.close()


async def test_roles_and_tokens(api: Api) -> None:
    status, body, headers = await api.call("GET", "/v1/lists/entries", token=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert headers["Content-Type"].startswith(PROBLEM)
    status, _, headers = await api.call("GET", "/v1/lists/entries", token=OPS[:-1] + "x")
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    status, body, headers = await api.call(
        "POST", "/v1/lists/entries", VIEWER, json={"list": "grey", "kind": "tac", "value": "35000001"}
    )
    assert status == 403 and "'write'" in body["detail"]
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    status, body, _ = await api.call("GET", "/openapi.json", token=None)
    assert status == 200 and body["openapi"] == "3.1.0"


async def test_imsis_masked_without_the_pii_role(api: Api) -> None:
    pair = {"list": "white", "kind": "pair", "value": IMEI, "imsi": IMSI}
    status, body, _ = await api.call("POST", "/v1/lists/entries", json=pair)
    assert status == 201 and body["imsi"] == "00101**********"
    path = f"/v1/lists/white/entries/pair:{IMEI}:{IMSI}"
    assert (await api.call("GET", path, ADMIN))[1]["imsi"] == IMSI
    assert (await api.call("GET", path, VIEWER))[1]["imsi"] == "00101**********"
    _, body, _ = await api.call("GET", f"/v1/checks/{IMEI}?imsi={IMSI}", VIEWER)
    assert body["imsi"] == "00101**********"
    assert body["list_entries"][0]["imsi"] == "00101**********"
    _, body, _ = await api.call("GET", "/v1/audit", VIEWER)
    assert body["records"][-1]["target"] == f"white/pair:{IMEI}:00101**********"
    assert body["records"][-1]["after"]["imsi"] == "00101**********"
    _, body, _ = await api.call("GET", "/v1/audit", ADMIN)
    assert body["records"][-1]["after"]["imsi"] == IMSI


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"list": "pink", "kind": "imei", "value": IMEI}, "list"),
        ({"list": "black", "kind": "phone", "value": IMEI}, "kind"),
        ({"list": "black", "kind": "imei", "value": "352099001761482"}, "value"),  # bad Luhn
        ({"list": "black", "kind": "pair", "value": IMEI, "imsi": "12"}, "imsi"),
        ({"list": "black", "kind": "imei", "value": IMEI, "imsi": IMSI}, "imsi"),
        ({"list": "black", "kind": "imei"}, "value"),
        ({"list": "black", "kind": "imei", "value": IMEI, "colour": "x"}, "colour"),
        ({"list": "black", "kind": "imei", "value": IMEI, "reason": 5}, "reason"),
        ({"list": "black", "kind": "tac", "value": "3500", "created": "yesterday"}, "value"),
        ({"list": "black", "kind": "tac", "value": "35000001", "created": "yesterday"}, "created"),
        # Valid ISO 8601, but before year 1 or after 9999 in UTC: no answer, export or audit
        # record could show the entry (datetime cannot), so it is refused, not stored.
        ({"list": "black", "kind": "tac", "value": "35000097",
          "created": "0001-01-01T00:00:00+01:00"}, "created"),
        ({"list": "black", "kind": "tac", "value": "35000098",
          "updated": "9999-12-31T23:59:59-01:00"}, "updated"),
    ],
)
async def test_bad_input_names_the_field(api: Api, entry: dict[str, Any], field: str) -> None:
    v = api.gateway.lists_version
    status, body, headers = await api.call("POST", "/v1/lists/entries", json=entry)
    assert status == 400 and headers["Content-Type"].startswith(PROBLEM)
    assert body["invalid-params"][0]["name"] == field, body
    assert api.gateway.lists_version == v


async def test_bad_requests_are_problems(api: Api) -> None:
    for method, path, kwargs, status in [
        ("POST", "/v1/lists/entries", {"data": "x", "headers": {"Content-Type": "text/plain"}},
         415),
        ("POST", "/v1/lists/entries", {"data": "{", "headers": {"Content-Type":
                                                                  "application/json"}}, 400),
        ("GET", "/v1/lists/entries?limit=0", {}, 400),
        ("GET", "/v1/lists/entries?limit=" + "1" * 5000, {}, 400),  # int() refuses > 4,300 digits
        ("GET", "/v1/audit?after=" + "9" * 5000, {}, 400),
        ("GET", "/v1/lists/entries?cursor=bm9wZQ", {}, 400),
        # Nested past the JSON reader's recursion limit (RecursionError, not ValueError).
        ("GET", "/v1/lists/entries?cursor=" + base64.urlsafe_b64encode(b"[" * 4000).decode(),
         {}, 400),
        ("POST", "/v1/lists/entries", {"data": "[" * 100_000,
                                        "headers": {"Content-Type": "application/json"}}, 400),
        ("GET", "/v1/lists/purple/entries/imei:35209900176148", {}, 400),
        ("GET", "/v1/lists/black/entries/imei:123", {}, 400),
        ("GET", "/v1/imeis/123/list-entries", {}, 400),
        ("GET", "/v1/checks/35209900176148?imsi=12", {}, 400),
        ("GET", "/v1/tacs/1234", {}, 400),
        ("GET", "/v1/tacs/99999999", {}, 404),
        ("GET", "/v1/audit?since=2026-01-01", {}, 400),  # no time zone
        ("GET", "/v1/jobs/nope", {}, 404),
        ("GET", "/v1/nothing", {}, 404),
        ("PATCH", "/v1/audit", {}, 405),
    ]:
        got, body, headers = await api.call(method, path, **kwargs)
        assert got == status, (method, path, body)
        assert headers["Content-Type"].startswith(PROBLEM), (method, path)
        assert body["status"] == status and body["title"] and body["detail"]


async def test_pagination_visits_every_entry_once(api: Api) -> None:
    for i in range(25):
        tac = f"{35000100 + i:08d}"
        assert (await api.call("PUT", f"/v1/lists/grey/entries/tac:{tac}", json={}))[0] == 201
    status, first, _ = await api.call("GET", "/v1/lists/entries?kind=tac&list=grey&limit=10")
    assert status == 200 and len(first["entries"]) == 10 and first["next_cursor"]
    seen = await _entries(api, kind="tac", list="grey", limit="10")
    values = [e["value"] for e in seen]
    assert values == sorted(values) and len(set(values)) == len(values) >= 25


async def test_check_answers_as_the_cli_does(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await api.call("POST", "/v1/lists/entries",
                   json={"list": "grey", "kind": "tac", "value": IMEI[:8], "reason": "watch"})
    status, body, _ = await api.call("GET", f"/v1/checks/{IMEI}?imsi={IMSI}&sv=01")
    assert status == 200 and body["decided_by"] == "greylisted"
    assert body["equipment_status"] == "GREYLISTED"
    # The CLI over the same state and configuration prints the same JSON.
    config = api.gateway.config
    for name, value in config.env_vars.items():
        monkeypatch.setenv(value, str(config.values[name]) if not isinstance(
            config.values[name], list) else ",".join(config.values[name]))
    argv = ["check", IMEI, "--imsi", IMSI, "--sv", "01", "--json"]
    assert await asyncio.to_thread(cli_main, argv) == 0
    cli = json.loads(capsys.readouterr().out)
    for report in (cli, body):
        if isinstance(report["registry"], dict):
            report["registry"].pop("age_seconds")
    assert cli == body
    status, body, _ = await api.call("GET", f"/v1/checks/{IMEI}?sv=1")
    assert body["result_code"] == 5004 and body["equipment_status"] is None


async def test_write_reaches_the_s13_path_at_once(api: Api) -> None:
    mme = await connect_mme(api.gateway)
    try:
        answer = await mme.check(IMEI)
        assert status_of(answer) == 0  # WHITELISTED
        await api.call("POST", "/v1/lists/entries",
                       json={"list": "black", "kind": "imei", "value": IMEI})
        answer = await mme.check(IMEI)
        assert status_of(answer) == 1  # BLACKLISTED, no poll needed
    finally:
        await mme.close()


async def test_query_by_imei_tac_observations(api: Api) -> None:
    for entry in ({"list": "black", "kind": "imei", "value": IMEI},
                  {"list": "grey", "kind": "tac", "value": IMEI[:8]},
                  {"list": "white", "kind": "pair", "value": IMEI, "imsi": IMSI},
                  {"list": "grey", "kind": "range", "value": f"{IMEI[:8]}000000-{IMEI[:8]}999999"},
                  {"list": "black", "kind": "imei", "value": "35209900176148"}):
        assert (await api.call("POST", "/v1/lists/entries", json=entry))[0] == 201
    _, body, _ = await api.call("GET", f"/v1/imeis/{IMEI15}/list-entries")
    assert sorted((e["list"], e["kind"]) for e in body["entries"]) == [
        ("black", "imei"), ("grey", "range"), ("grey", "tac"), ("white", "pair")]
    status, body, _ = await api.call("GET", f"/v1/tacs/{IMEI}")
    assert status == 200 and body["tac"] == IMEI[:8] and body["manufacturer"]
    mme = await connect_mme(api.gateway)
    try:
        await mme.check(IMEI, imsi=IMSI)
    finally:
        await mme.close()
    assert api.gateway.observations is not None
    await asyncio.to_thread(api.gateway.observations.flush)
    _, body, _ = await api.call("GET", f"/v1/imeis/{IMEI}/observations", VIEWER)
    [seen] = body["observations"]
    assert seen["imsi"] == "00101**********" and seen["count"] == 1
    _, body, _ = await api.call("GET", f"/v1/imeis/{IMEI}/observations", ADMIN)
    assert body["observations"][0]["imsi"] == IMSI


async def test_clone_detection_state_and_checks_record_nothing(start_gateway: Any) -> None:
    from tests.api.conftest import api_env

    gateway = await start_gateway(**api_env(
        EIR_CLONE_DETECTION_ENABLED="true", EIR_CLONE_DETECTION_THRESHOLD="2"))
    import aiohttp

    async with aiohttp.ClientSession() as session:
        api = Api(gateway, session, f"http://127.0.0.1:{gateway.api.port}")
        mme = await connect_mme(gateway)
        try:
            for n in range(2):
                await mme.check(IMEI, imsi=f"00101000000000{n}")
        finally:
            await mme.close()
        # A check with a third IMSI says "suspected" (3 > threshold 2) but records nothing.
        for n in range(5):
            _, body, _ = await api.call("GET", f"/v1/checks/{IMEI}?imsi=00101000000009{n}")
            assert body["decided_by"] == "clone_suspected"
        _, body, _ = await api.call("GET", f"/v1/imeis/{IMEI}/clone-detection", ADMIN)
        # The log may have been written meanwhile: it holds the same two.
        assert body["source"] in ("tracker", "tracker and observation log")
        assert body["distinct_imsis"] == 2
        assert not body["suspected"] and body["threshold"] == 2
        assert {i["imsi"] for i in body["imsis"]} == {"001010000000000", "001010000000001"}
        # Had those checks been counted, a known IMSI would now be suspected too.
        _, body, _ = await api.call("GET", f"/v1/checks/{IMEI}?imsi=001010000000001")
        assert body["decided_by"] == "clean"


async def _wait_job(api: Api, location: str) -> dict[str, Any]:
    for _ in range(600):
        _, job, _ = await api.call("GET", location, VIEWER)
        if job["state"] in ("succeeded", "failed"):
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {location} did not end: {job}")


async def test_import_job_is_atomic_and_reports_progress(api: Api, tmp_path: Path) -> None:
    rows = [f"grey,imei,{10**13 + i:014d},,bulk" for i in range(20_000)]
    status, job, headers = await api.call(
        "POST", "/v1/lists/imports?file=bulk.csv", data="\n".join(rows) + "\n",
        headers={"Content-Type": "text/csv"})
    assert status == 202 and job["state"] in ("queued", "running")
    job = await _wait_job(api, headers["Location"])
    assert job["state"] == "succeeded" and job["entries"] == 20_000, job
    assert job["progress"]["percent"] == 100.0 and job["progress"]["rows"] == 20_000
    assert job["progress"]["total"] == len("\n".join(rows)) + 1
    version = job["version"]
    assert api.gateway.lists_version == version  # the classifier has it
    # One bad row at the end: nothing of the file is imported, the row is named.
    bad = [f"black,imei,{10**13 + i:014d},,x" for i in range(5000)] + ["black,imei,123,,x"]
    _, job, headers = await api.call("POST", "/v1/lists/imports", data="\n".join(bad),
                                     headers={"Content-Type": "text/csv"})
    job = await _wait_job(api, headers["Location"])
    assert job["state"] == "failed" and "row 5001" in job["error"], job
    # A repeated entry in JSON lines: named with both lines.
    lines = [json.dumps({"list": "black", "kind": "tac", "value": "35000001"})] * 2
    _, job, headers = await api.call("POST", "/v1/lists/imports?format=jsonl&file=t.jsonl",
                                     data="\n".join(lines))
    job = await _wait_job(api, headers["Location"])
    assert job["state"] == "failed" and "t.jsonl: row 2 repeats row 1" in job["error"], job
    _, body, _ = await api.call("GET", "/v1/lists/entries?list=black&limit=1")
    assert body["version"] == version
    _, body, _ = await api.call("GET", "/v1/audit?action=import&actor=api:ops")
    [record] = body["records"]
    assert record["after"]["entries"] == 20_000 and record["actor"] == "api:ops"
    assert not any(api.gateway.config.api.imports_dir.iterdir())  # uploads removed


async def test_import_too_large_or_untyped(start_gateway: Any) -> None:
    from tests.api.conftest import api_env

    gateway = await start_gateway(**api_env(EIR_API_MAX_IMPORT_BYTES="100"))
    import aiohttp

    async with aiohttp.ClientSession() as session:
        api = Api(gateway, session, f"http://127.0.0.1:{gateway.api.port}")
        status, body, _ = await api.call("POST", "/v1/lists/imports", data="x" * 101,
                                         headers={"Content-Type": "text/csv"})
        assert status == 413 and body["status"] == 413
        status, _, _ = await api.call("POST", "/v1/lists/imports", data="x",
                                      headers={"Content-Type": "text/plain"})
        assert status == 415


async def test_export_imports_again(api: Api, tmp_path: Path) -> None:
    await api.call("POST", "/v1/lists/entries", json={"list": "white", "kind": "pair",
                                                       "value": IMEI, "imsi": IMSI, "reason": "r"})
    for fmt in ("csv", "jsonl"):
        status, text, headers = await api.call("GET", f"/v1/lists/export?format={fmt}", VIEWER)
        assert status == 200 and headers["Content-Type"].startswith(
            "text/csv" if fmt == "csv" else "application/jsonl")
        assert IMSI in text  # an export is the list itself, for backups: IMSIs in clear
        status, job, headers = await api.call("POST", f"/v1/lists/imports?format={fmt}",
                                              data=text)
        job = await _wait_job(api, headers["Location"])
        assert job["state"] == "succeeded", job
        assert job["entries"] == len([line for line in text.splitlines()[1 if fmt == "csv"
                                                                           else 0:] if line])


def test_no_token_no_api(tmp_path: Path) -> None:
    from gateway.api.app import start_api
    from gateway.config import load_config
    from tests.e2e.conftest import gateway_env

    config = load_config(None, env={**gateway_env(tmp_path), "EIR_API_LISTEN": "127.0.0.1:0"})
    assert config.api.tokens == ()
    assert asyncio.run(start_api(config, None)) is None  # type: ignore[arg-type]
    assert os.environ.get("EIR_API_TOKENS") is None
