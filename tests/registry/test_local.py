"""Embedded SQLite registry: verdicts, IMEI forms, import files, change feed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_client.local import DeclarationFileError, LocalRegistry
from registry_client.model import (
    RegistryStatus,
    RegistryUnavailable,
    RegistryVerdict,
    Report,
    ReportType,
    VerdictOrigin,
)
from registry_client.wire import (
    InvalidImei,
    TacDeclaration,
    luhn_check_digit,
    normalise_imei,
    parse_range,
)
from tests.registry.conftest import (
    COUNTERFEIT,
    NON_PARTICIPATING,
    OUTSIDE,
    SAMPLE,
    STOLEN,
    UNDECLARED,
)


def test_luhn_known_vector() -> None:
    # TS 23.003 Annex B example IMEI 49015420323751 with check digit 8
    assert luhn_check_digit("49015420323751") == 8
    assert normalise_imei("490154203237518") == "49015420323751"
    with pytest.raises(InvalidImei):
        normalise_imei("490154203237517")


@pytest.mark.parametrize(
    "raw", ["", "1234567890123", "12345678901234567", "3520990017614a", "٣٥٢٠٩٩٠٠١٧٦١٤٨٠", None]
)
def test_malformed_imeis_rejected(raw: object) -> None:
    with pytest.raises(InvalidImei):
        normalise_imei(raw)


@given(st.text(alphabet="0123456789", min_size=14, max_size=14), st.integers(0, 99))
def test_all_forms_normalise_to_the_body(body: str, svn: int) -> None:
    check = str(luhn_check_digit(body))
    assert normalise_imei(body) == body
    assert normalise_imei(body + check) == body
    assert normalise_imei(f"{body}{svn:02d}") == body
    wrong = str((int(check) + 1) % 10)
    with pytest.raises(InvalidImei):
        normalise_imei(body + wrong)


def test_three_verdicts_and_reports(local: LocalRegistry) -> None:
    stolen = local.verdict(STOLEN)
    assert stolen.status is RegistryStatus.MANUFACTURED
    assert stolen.source == "declared_range"
    assert stolen.manufacturer == "Example Handsets Ltd"
    assert [(r.type, r.country) for r in stolen.active_reports] == [(ReportType.STOLEN, "FR")]
    assert stolen.origin is VerdictOrigin.LOCAL

    assert local.verdict(COUNTERFEIT).active_reports[0].type is ReportType.COUNTERFEIT
    assert local.verdict(OUTSIDE).status is RegistryStatus.NOT_MANUFACTURED
    # 35332011: two ranges, the gap between them is not manufactured
    assert local.verdict("35332011100000").status is RegistryStatus.MANUFACTURED
    assert local.verdict("35332011599999").status is RegistryStatus.MANUFACTURED
    assert local.verdict("35332011099999").status is RegistryStatus.NOT_MANUFACTURED
    assert local.verdict("35332011300000").status is RegistryStatus.NOT_MANUFACTURED
    unknown = local.verdict(NON_PARTICIPATING)
    assert (unknown.status, unknown.manufacturer) == (RegistryStatus.UNKNOWN, "Quiet Modules Inc")
    assert local.verdict(UNDECLARED).status is RegistryStatus.UNKNOWN
    assert local.verdict(UNDECLARED).manufacturer is None


def test_verdicts_are_built_field_by_field(local: LocalRegistry) -> None:
    # The index builds verdicts positionally (tuple.__new__): each field where its name says,
    # and a verdict equals a verdict of the same fields only, never a plain tuple of them.
    for imei in (STOLEN, OUTSIDE, NON_PARTICIPATING, UNDECLARED):
        got = local.cached(imei)
        assert got is not None
        want = RegistryVerdict(
            imei=imei,
            tac=imei[:8],
            status=got.status,
            manufacturer=got.manufacturer,
            source=got.source,
            reports=local.reports(imei),
            origin=VerdictOrigin.LOCAL,
            fetched_at=got.fetched_at,
        )
        assert got == want and not got != want and hash(got) == hash(want)
        plain = tuple(got)
        assert got != plain and plain != got and not got == plain and not plain == got
        assert got != want._replace(fetched_at=got.fetched_at + 1)


def test_withdrawn_report_is_attached_but_not_active(local: LocalRegistry) -> None:
    verdict = local.verdict("35209900200000")
    assert len(verdict.reports) == 1 and verdict.reports[0].withdrawn
    assert verdict.active_reports == ()


def test_imei_forms(local: LocalRegistry) -> None:
    fifteen = STOLEN + str(luhn_check_digit(STOLEN))
    for form in (STOLEN, fifteen, STOLEN + "07"):
        verdict = local.verdict(form)
        assert verdict.imei == STOLEN and verdict.active_reports
    with pytest.raises(InvalidImei):
        local.verdict(STOLEN + str((luhn_check_digit(STOLEN) + 1) % 10))


async def test_verdict_source_interface(local: LocalRegistry) -> None:
    assert local.cached(STOLEN) is not None
    assert local.cached("123") is None
    assert (await local.check(OUTSIDE)).status is RegistryStatus.NOT_MANUFACTURED
    with pytest.raises(RegistryUnavailable):
        await local.check("123")
    await local.close()
    with pytest.raises(RegistryUnavailable):
        await local.check(STOLEN)


def test_seed_only_when_empty_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    first = LocalRegistry.open(path, [SAMPLE])
    first.apply([TacDeclaration("35209900", participating=False)])
    first.close_sync()
    again = LocalRegistry.open(path, [SAMPLE])  # not empty: seeds are not re-applied
    assert again.verdict(OUTSIDE).status is RegistryStatus.UNKNOWN
    again.close_sync()


def test_changes_feed_is_ordered_and_pages(local: LocalRegistry) -> None:
    page = local.changes(0, 4)
    assert page.has_more and len(page.changes) == 4
    rest = local.changes(int(page.next_cursor), 100)
    assert not rest.has_more and len(rest.changes) == 2
    assert local.changes(int(rest.next_cursor), 100).changes == ()
    # An update moves the record to the end of the feed; unchanged re-imports add nothing.
    assert local.import_files([SAMPLE]).changed == 0
    local.apply([Report(STOLEN, ReportType.STOLEN, "FR", "2026-02-10", withdrawn=True)])
    tail = local.changes(int(rest.next_cursor), 100)
    assert tail.changes == (Report(STOLEN, ReportType.STOLEN, "FR", "2026-02-10", True),)
    assert int(tail.next_cursor) == local.last_seq()


def test_import_csv(tmp_path: Path) -> None:
    path = tmp_path / "decl.csv"
    path.write_text(
        "kind,tac,manufacturer,participating,ranges,updated,imei,type,country,since,withdrawn\n"
        "tac,35209900,Acme,true,000000-000009;000100-000199,2026-01-15T00:00:00Z,,,,,\n"
        f"report,,,,,,{STOLEN}{luhn_check_digit(STOLEN)},lost,DE,2026-01-02,\n"
    )
    registry = LocalRegistry()
    summary = registry.import_files([path])
    assert (summary.tacs, summary.reports, summary.changed) == (1, 1, 2)
    assert registry.verdict("35209900000150").status is RegistryStatus.MANUFACTURED
    assert registry.verdict("35209900000050").status is RegistryStatus.NOT_MANUFACTURED
    assert registry.verdict(STOLEN).active_reports[0].type is ReportType.LOST


def test_import_json_list_form(tmp_path: Path) -> None:
    path = tmp_path / "feed.json"
    records = [
        {"kind": "tac", "tac": "12345678", "participating": True, "ranges": []},
        {"kind": "report", "imei": "12345678000001", "type": "duplicate_in_use", "country": "GH"},
    ]
    path.write_text(json.dumps(records))
    registry = LocalRegistry()
    registry.import_files([path])
    verdict = registry.verdict("12345678000001")
    assert verdict.status is RegistryStatus.NOT_MANUFACTURED
    assert verdict.active_reports[0].type is ReportType.DUPLICATE_IN_USE


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("bad.json", '{"tacs": [{"tac": "1234", "participating": true}]}', "tacs[0]: tac"),
        ("bad2.json", '{"tacs": [], "reports": [{"imei": "1", "type": "stolen"}]}', "reports[0]"),
        ("bad3.json", '{"tacs": [\n{"tac": ', "line 2: invalid JSON"),
        (
            "bad4.json",
            '{"tacs": [{"tac": "12345678", "participating": true,'
            ' "ranges": [{"first": "000009", "last": "000001"}]}]}',
            "tacs[0]: ranges[0]",
        ),
        ("bad5.csv", "kind,tac,participating\ntac,12345678,true\ntac,12345678,maybe\n", "line 3"),
        ("bad6.csv", "tac,participating\n12345678,true\n", "line 1"),
        (
            "bad7.json",
            '[{"kind": "report", "imei": "35209900176140", "type": "stolen"}]',
            "record 0",
        ),
    ],
)
def test_import_errors_name_the_record_and_import_nothing(
    tmp_path: Path, local: LocalRegistry, name: str, content: str, where: str
) -> None:
    good = tmp_path / "good.json"
    good.write_text('{"tacs": [{"tac": "11111111", "participating": true, "ranges": []}]}')
    bad = tmp_path / name
    bad.write_text(content)
    before = local.last_seq()
    with pytest.raises(DeclarationFileError) as info:
        local.import_files([good, bad])
    assert str(bad) in str(info.value) and where in str(info.value)
    assert local.last_seq() == before
    assert local.tac("11111111") is None


def test_import_rolls_back_on_write_failure(local: LocalRegistry) -> None:
    before = local.last_seq()

    def records() -> object:
        yield TacDeclaration("22222222", participating=True)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        local.apply(records())  # type: ignore[arg-type]
    assert local.tac("22222222") is None and local.last_seq() == before


def test_parse_range_forms() -> None:
    assert parse_range("000001-000002").first == 1
    with pytest.raises(ValueError):
        parse_range("000001")


def test_batch_verdicts_match_single_ones(local: LocalRegistry) -> None:
    imeis = [STOLEN, OUTSIDE, COUNTERFEIT + "00", NON_PARTICIPATING, UNDECLARED, STOLEN]
    imeis += [f"35209900{n:06d}" for n in range(1200)]  # more than one IN (...) chunk
    batch = local.verdicts(imeis)
    single = [local.verdict(i) for i in imeis]
    strip = lambda v: (v.imei, v.status, v.manufacturer, v.source, v.reports)  # noqa: E731
    assert [strip(v) for v in batch] == [strip(v) for v in single]
    assert batch[0].active_reports and batch[5].active_reports


def test_other_connections_writes_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    LocalRegistry.open(path, [SAMPLE]).close_sync()
    serving = LocalRegistry(path, revalidate_interval=3600.0)
    serving_now = LocalRegistry(path, revalidate_interval=0.0)
    assert serving.cached(OUTSIDE) is not None and serving_now.tac("35209900") is not None
    writer = LocalRegistry(path)  # e.g. `eir-gateway registry import` while serving
    writer.apply([TacDeclaration("35209900", participating=False)])
    writer.close_sync()
    verdict = serving_now.cached(OUTSIDE)
    assert verdict is not None and verdict.status is RegistryStatus.UNKNOWN
    assert serving_now.tac("35209900") == TacDeclaration("35209900", participating=False)
    # an instance that revalidates rarely keeps its memo until then
    memo = serving.cached(OUTSIDE)
    assert memo is not None and memo.status is RegistryStatus.NOT_MANUFACTURED
    serving.close_sync()
    serving_now.close_sync()


def test_cached_memo_is_bounded_and_dropped_on_write(local: LocalRegistry) -> None:
    small = LocalRegistry(memo_size=2)
    small.import_files([SAMPLE])
    for imei in (STOLEN, OUTSIDE, COUNTERFEIT):
        assert small.cached(imei) is not None
    assert len(small._verdict_memo) <= 2
    first = local.cached(OUTSIDE)
    assert first is not None and local.cached(OUTSIDE) is first  # memoised
    local.apply([Report(OUTSIDE, ReportType.STOLEN, "GH")])
    again = local.cached(OUTSIDE)
    assert again is not None and again.active_reports  # own write: memo dropped at once


def test_verdicts_never_read_sqlite_for_a_handset(tmp_path: Path) -> None:
    """The index answers: a trace of every SQL statement shows none per cached() call."""
    registry = LocalRegistry.open(tmp_path / "r.sqlite", [SAMPLE])
    statements: list[str] = []
    registry._db.set_trace_callback(statements.append)
    for imei in (STOLEN, OUTSIDE, COUNTERFEIT, NON_PARTICIPATING, UNDECLARED):
        assert registry.cached(imei) is not None
    assert statements == []
    registry.close_sync()


def test_another_connections_large_import_is_read_in_slices(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    LocalRegistry.open(path, [SAMPLE]).close_sync()
    # catch_up_seconds=0: one page of the change feed per revalidation, never the whole import
    serving = LocalRegistry(path, revalidate_interval=0.0, catch_up_seconds=0.0)
    writer = LocalRegistry(path)
    tacs = [TacDeclaration(f"35{n:06d}", participating=True) for n in range(2_000)]
    reports = [Report(f"35{n:06d}000001", ReportType.STOLEN, "FR") for n in range(500)]
    writer.apply([*tacs, *reports])
    writer.close_sync()
    last = "35000499000001"  # its report is the last record written
    first = serving.cached(last)  # one slice read: not there yet
    assert first is not None and not first.reports
    calls = 1
    while calls < 100:
        verdict = serving.cached(last)
        calls += 1
        assert verdict is not None
        if verdict.active_reports:
            break
    assert verdict.active_reports and calls > 2  # caught up, in several slices
    declared = serving.cached("35001999000001")
    assert declared is not None and declared.status is RegistryStatus.NOT_MANUFACTURED
    # the memo followed: an IMEI answered before the import is answered afresh
    assert serving.cached(OUTSIDE) is serving.cached(OUTSIDE)
    serving.close_sync()


def test_memo_keeps_the_newest_and_gives_the_same_verdict(local: LocalRegistry) -> None:
    small = LocalRegistry(memo_size=2)
    small.import_files([SAMPLE])
    a, b, c = (small.cached(i) for i in (STOLEN, OUTSIDE, COUNTERFEIT))
    assert small.cached(COUNTERFEIT) is c and small.cached(OUTSIDE) is b
    assert small.cached(STOLEN) is not a  # the oldest went
    assert len(small._verdict_memo) == 2
