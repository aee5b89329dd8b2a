"""Operator lists: entries, store version, CSV import/export, snapshot lookups at 100k."""

from __future__ import annotations

import io
import os
import random
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.imei import luhn_check_digit
from gateway.lists import (
    EntryKind,
    ListColour,
    ListError,
    ListStore,
    OperatorLists,
    make_entry,
    open_operator_lists,
    read_csv,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ListStore]:
    s = ListStore(tmp_path / "lists.sqlite")
    yield s
    s.close()


def test_make_entry_validation() -> None:
    e = make_entry("Black", "imei", "352099001761481", reason=" stolen ")
    assert (e.colour, e.kind, e.first, e.reason) == (ListColour.BLACK, EntryKind.IMEI,
                                                     35209900176148, "stolen")
    assert make_entry("white", "tac", "01234500").value == "01234500"
    r = make_entry("grey", "range", "35332011900000-35332011909999")
    assert (r.first, r.last) == (35332011900000, 35332011909999)
    bad = [
        ("red", "imei", "35209900176148", ""), ("black", "phone", "35209900176148", ""),
        ("black", "imei", "352099001761480", ""),  # wrong check digit
        ("black", "imei", "3520990017614805", ""),  # IMEISV is not a list key
        ("black", "tac", "1234567", ""), ("black", "range", "35332011909999-35332011900000", ""),
        ("black", "range", "35332011900000", ""), ("white", "pair", "01234500000017", ""),
        ("white", "pair", "01234500000017", "12345"),
        ("black", "imei", "35209900176148", "1234567"),
    ]
    for args in bad:
        with pytest.raises(ListError):
            make_entry(*args)


def test_add_remove_bumps_version(store: ListStore) -> None:
    v0 = store.version()
    e = make_entry("black", "imei", "35209900176148", reason="stolen")
    store.add(e)
    assert store.version() == v0 + 1
    store.add(make_entry("black", "imei", "35209900176148", reason="stolen, confirmed"))
    assert [x.reason for x in store.entries()] == ["stolen, confirmed"]  # upsert
    assert store.remove(e) and store.version() == v0 + 3
    assert not store.remove(e) and store.version() == v0 + 3


def test_snapshot_matches_every_kind(store: ListStore) -> None:
    store.add_many([
        make_entry("black", "imei", "35209900176148", reason="stolen"),
        make_entry("grey", "range", "35332011900000-35332011909999", reason="batch"),
        make_entry("grey", "range", "35332011000000-35332011999999", reason="wide"),
        make_entry("black", "tac", "35000001", reason="barred"),
        make_entry("white", "pair", "01234500000017", "001010000000001", reason="lab"),
        make_entry("white", "imei", "35209900176148", reason="exception"),
    ])
    snap = store.load()
    assert snap.version == store.version()
    colours = [(m.entry.colour, m.entry.kind) for m in snap.match(35209900176148)]
    assert colours == [(ListColour.WHITE, EntryKind.IMEI), (ListColour.BLACK, EntryKind.IMEI)]
    inside = snap.match(35332011905000)
    assert sorted(m.entry.reason or "" for m in inside) == ["batch", "wide"]  # overlapping
    assert [m.entry.reason for m in snap.match(35332011950000)] == ["wide"]
    assert snap.match(35332012000000) == []
    assert [m.entry.reason for m in snap.match(35000001123456)] == ["barred"]
    assert snap.match(1234500000017) == []  # pair needs its IMSI
    assert snap.match(1234500000017, "001010000000002") == []
    assert [m.entry.reason for m in snap.match(1234500000017, "001010000000001")] == ["lab"]


def test_operator_lists_poll_and_reload(store: ListStore) -> None:
    lists = OperatorLists(store)
    lists.reload()
    assert not lists.poll()
    store.add(make_entry("black", "imei", "35209900176148", reason="stolen"))
    assert lists.snapshot.match(35209900176148) == []
    assert lists.poll()
    [match] = lists.snapshot.match(35209900176148)
    assert match.entry.reason is None  # exact IMEIs: reason stays in SQLite
    assert lists.describe(match).reason == "stolen"


def test_csv_round_trip(tmp_path: Path, store: ListStore) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "list,kind,value,imsi,reason\n"
        "black,imei,35693803564380,,\"stolen, reported\"\n"
        "white,pair,01234500000017,001010000000001,lab\n"
        "grey,range,35332011900000-35332011909999,,batch\n"
        "black,tac,35000001,,barred\n"
    )
    assert store.import_csv(src) == 4
    out = io.StringIO()
    assert store.export_csv(out) == 4
    dst = tmp_path / "out.csv"
    dst.write_text(out.getvalue())
    again = [(e.colour, e.kind, e.first, e.last, e.imsi, e.reason) for e in read_csv(dst)]
    before = [(e.colour, e.kind, e.first, e.last, e.imsi, e.reason) for e in read_csv(src)]
    assert sorted(again, key=repr) == sorted(before, key=repr)


def test_bad_csv_row_fails_whole_import(tmp_path: Path, store: ListStore) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("black,imei,35693803564380,,ok\nblack,imei,123,,bad\n")
    v = store.version()
    with pytest.raises(ListError, match=r"bad\.csv: row 2: IMEI '123'"):
        store.import_csv(src)
    assert list(store.entries()) == [] and store.version() == v
    src.write_text("black,imei,35693803564380\n")
    with pytest.raises(ListError, match=r"row 1: 3 fields"):
        store.import_csv(src)


def test_open_operator_lists_imports_once(tmp_path: Path) -> None:
    src = tmp_path / "l.csv"
    src.write_text("black,imei,35693803564380,,stolen\n")
    lists = open_operator_lists(tmp_path / "l.sqlite", [src])
    v = lists.snapshot.version
    assert lists.snapshot.match(35693803564380)
    assert lists.store is not None
    lists.store.close()
    again = open_operator_lists(tmp_path / "l.sqlite", [src])
    assert again.snapshot.version == v  # unchanged file: not re-imported
    assert again.store is not None
    again.store.close()


def test_100k_exact_imeis_load_compactly(store: ListStore) -> None:
    rng = random.Random(7)
    values = rng.sample(range(35_000_000_000_000, 36_000_000_000_000), 100_000)
    store.add_many(
        make_entry("black", "imei", f"{v:014d}") for v in values[:50_000]
    )
    store.add_many(
        make_entry("grey", "imei", f"{v:014d}") for v in values[50_000:]
    )
    tracemalloc.start()
    snap = store.load(chunk=8192)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 100k entries in two array('Q'): ~0.8 MB; 100k Python ints alone would be ~2.8 MB more.
    assert current < 2_000_000
    assert snap.counts()["black.imei"] == 50_000 and snap.counts()["grey.imei"] == 50_000
    black = set(values[:50_000])
    for v in values[::100]:
        [m] = snap.match(v)
        assert m.entry.colour is (ListColour.BLACK if v in black else ListColour.GREY)
    for v in rng.sample(range(10_000_000_000_000, 20_000_000_000_000), 1000):
        assert snap.match(v) == []


imei_body = st.integers(0, 10**14 - 1).map(lambda n: f"{n:014d}")
good_row = st.one_of(
    imei_body.map(lambda b: f"black,imei,{b},,r"),
    imei_body.map(lambda b: f"white,imei,{b}{luhn_check_digit(b)},,r"),
    st.integers(0, 10**8 - 1).map(lambda t: f"grey,tac,{t:08d},,r"),
)
BAD = ["black,imei,1234,,r", "pink,imei,35693803564380,,r", "black,tac,1234567X,,r",
       "white,pair,35693803564380,,r", "black,imei,35693803564380", "black,thing,1,,r"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(good_row, st.sampled_from(BAD)), min_size=1, max_size=20).flatmap(
    # sometimes repeat a row, so duplicates are exercised and not left to chance collisions
    lambda rows: st.sampled_from([rows, rows + rows[:1]])
))
def test_lists_csv_bad_rows_always_named(tmp_path: Path, rows: list[str]) -> None:
    path = tmp_path / "p.csv"
    path.write_text("\n".join(rows) + "\n")
    # The first problem is a bad row or a repeat of an earlier entry (15 digits == 14 + Luhn).
    problem, seen = None, {}
    for i, r in enumerate(rows, 1):
        if r in BAD:
            problem = rf"p\.csv: row {i}:"
            break
        e = make_entry(*r.split(","))
        key = (e.colour, e.kind, e.first)
        if key in seen:
            problem = rf"p\.csv: row {i} repeats row {seen[key]} "
            break
        seen[key] = i
    if problem is None:
        assert len(list(read_csv(path))) == len(rows)
    else:
        with pytest.raises(ListError, match=problem):
            list(read_csv(path))


def test_bulk_add_imeis(store: ListStore) -> None:
    v = store.version()
    assert store.bulk_add_imeis(ListColour.GREY, range(10**13, 10**13 + 1000), "bulk") == 1000
    assert store.version() == v + 1
    snap = store.load(chunk=100)
    assert snap.counts()["grey.imei"] == 1000
    [m] = snap.match(10**13 + 999)
    assert m.entry.colour is ListColour.GREY and snap.match(10**13 + 1000) == []


# --- duplicates, encodings, timestamps -------------------------------------------------------


def test_duplicate_rows_fail_naming_both(tmp_path: Path, store: ListStore) -> None:
    src = tmp_path / "d.csv"
    src.write_text(
        "list,kind,value,imsi,reason\n"
        "black,imei,35209900176148,,a\n"
        "white,imei,35209900176148,,exception\n"  # another list: a second entry, allowed
        "grey,tac,35000001,,t\n"
        "black,imei,352099001761481,,b\n"  # the same body with its check digit
    )
    v = store.version()
    with pytest.raises(ListError, match=r"d\.csv: row 5 repeats row 2 \(black imei 35209900176148\)"):
        store.import_csv(src)
    assert list(store.entries()) == [] and store.version() == v
    src.write_text(
        "white,pair,01234500000017,001010000000001,a\n"
        "white,pair,01234500000017,001010000000002,other SIM\n"
        "white,pair,01234500000017,001010000000001,b\n"
    )
    with pytest.raises(ListError, match=r"row 3 repeats row 1 \(white pair 01234500000017 0010"):
        store.import_csv(src)
    src.write_text("black,imei,35209900176148,,a\nwhite,imei,35209900176148,,b\n")
    assert store.import_csv(src) == 2 and len(list(store.entries())) == 2


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"black,imei,35209900176148,,ok\nblack,imei,35693803564380,,caf\xe9\n",
         r"x\.csv: line 2: not UTF-8 \(byte 0xe9\)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"x\.csv: line 1: not UTF-8 \(byte 0x89\)"),
        (b"black,imei,35209900176148,,a\nb\x00l\x00a\x00c\x00k\x00\n",
         r"x\.csv: line 2: a NUL byte"),  # UTF-16 without a BOM is valid UTF-8
    ],
)
def test_undecodable_csv_is_a_list_error(
    tmp_path: Path, store: ListStore, data: bytes, problem: str
) -> None:
    src = tmp_path / "x.csv"
    src.write_bytes(data)
    with pytest.raises(ListError, match=problem):
        store.import_csv(src)
    assert list(store.entries()) == []


def test_utf8_bom_header_accepted(tmp_path: Path, store: ListStore) -> None:
    src = tmp_path / "bom.csv"
    src.write_bytes("list,kind,value,imsi,reason\nblack,imei,35209900176148,,café\n"
                    .encode("utf-8-sig"))
    assert store.import_csv(src) == 1
    assert [e.reason for e in store.entries()] == ["café"]


def test_export_import_keeps_timestamps(tmp_path: Path, store: ListStore) -> None:
    store.add(make_entry("black", "imei", "35209900176148", reason="a"), now=1_700_000_000.0)
    store.add(make_entry("black", "imei", "35209900176148", reason="b"), now=1_700_000_500.0)
    store.add(make_entry("grey", "tac", "35000001", reason="t"), now=1_600_000_000.0)
    out = io.StringIO()
    store.export_csv(out)
    dump = tmp_path / "dump.csv"
    dump.write_text(out.getvalue())
    other = ListStore(tmp_path / "other.sqlite")
    try:
        assert other.import_csv(dump) == 2
        got = {e.value: (e.reason, e.created, e.updated) for e in other.entries()}
        assert got == {"35209900176148": ("b", 1_700_000_000.0, 1_700_000_500.0),
                       "35000001": ("t", 1_600_000_000.0, 1_600_000_000.0)}
        # Importing again over newer entries: created stays the earliest known.
        other.add(make_entry("grey", "tac", "35000001", reason="t"), now=1_800_000_000.0)
        other.import_csv(dump)
        [tac] = other.entries(kind=EntryKind.TAC)
        assert (tac.created, tac.updated) == (1_600_000_000.0, 1_600_000_000.0)
    finally:
        other.close()


def test_timestamp_columns_optional_and_validated(tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    src.write_text(
        "black,imei,35209900176148,,a,,\n"  # empty: the import time
        "black,tac,35000001,,b,2024-01-02T03:04:05,2024-01-02T03:04:05Z\n"  # bare time is UTC
    )
    a, b = read_csv(src)
    assert a.created is None and a.updated is None
    assert b.created == b.updated == 1_704_164_645.0
    src.write_text("black,imei,35209900176148,,a\nblack,tac,35000001,,b,yesterday,\n")
    with pytest.raises(ListError, match=r"t\.csv: row 2: created 'yesterday' is not an ISO"):
        list(read_csv(src))


# --- import files: authoritative for their own entries ---------------------------------------


def _write(path: Path, *rows: str) -> None:
    """Write rows and move the mtime forward, so a same-size edit is seen as a change."""
    path.write_text("".join(r + "\n" for r in rows))
    st = path.stat()
    bump = getattr(_write, "n", 0) + 1
    _write.n = bump  # type: ignore[attr-defined]
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


def _values(store: ListStore) -> set[str]:
    return {f"{e.colour.value} {e.value}" for e in store.entries()}


def test_import_file_removes_rows_it_no_longer_has(tmp_path: Path) -> None:
    db, src = tmp_path / "l.sqlite", tmp_path / "l.csv"
    _write(src, "black,imei,35209900176148,,a", "black,tac,35000001,,b", "grey,tac,35000002,,c")
    open_operator_lists(db, [src]).store.close()  # type: ignore[union-attr]
    manual = ListStore(db)
    manual.add(make_entry("white", "imei", "35693803564380"))  # CLI: never the file's to remove
    manual.add(make_entry("grey", "tac", "35000002", reason="mine now"))  # also in the file
    manual.close()
    _write(src, "black,imei,35209900176148,,a2")
    lists = open_operator_lists(db, [src])
    assert lists.store is not None
    v = lists.store.version()
    assert _values(lists.store) == {"black 35209900176148", "white 35693803564380",
                                    "grey 35000002"}
    assert [e.reason for e in lists.store.entries(kind=EntryKind.IMEI, colour=ListColour.BLACK)] \
        == ["a2"]
    lists.store.close()
    again = open_operator_lists(db, [src])  # unchanged: nothing written, no version bump
    assert again.store is not None and again.store.version() == v
    again.store.close()


def test_import_files_one_transaction_one_bump(tmp_path: Path, store: ListStore) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write(a, "black,imei,35209900176148,,a", "black,tac,35000001,,shared")
    _write(b, "black,tac,35000001,,shared", "grey,tac,35000002,,b")
    v = store.version()
    assert store.import_files([a, b]) == {a.resolve(): 2, b.resolve(): 2}
    assert store.version() == v + 1
    # b drops the shared TAC, which b owned (imported last): a still lists it, so it stays.
    _write(b, "grey,tac,35000002,,b")
    assert store.import_files([a, b]) == {b.resolve(): 1}
    assert _values(store) == {"black 35209900176148", "black 35000001", "grey 35000002"}
    # now a drops it too: gone. A bad second file fails the lot: nothing written.
    _write(a, "black,imei,35209900176148,,a")
    _write(b, "grey,tac,35000002,,b", "grey,tac,bad,,x")
    v = store.version()
    with pytest.raises(ListError, match=r"b\.csv: row 2"):
        store.import_files([a, b])
    assert store.version() == v and "black 35000001" in _values(store)
    _write(b, "grey,tac,35000002,,b")
    store.import_files([a, b])
    assert _values(store) == {"black 35209900176148", "grey 35000002"}
    assert store.version() == v + 1


def test_reload_reimports_changed_files_poll_does_not(tmp_path: Path) -> None:
    db, src = tmp_path / "l.sqlite", tmp_path / "l.csv"
    _write(src, "black,imei,35209900176148,,a")
    lists = open_operator_lists(db, [src])
    assert lists.store is not None
    before = lists.snapshot
    lists.reload()  # nothing changed: same entries (a new snapshot object is fine)
    assert lists.snapshot.version == before.version
    _write(src, "black,imei,35693803564380,,b")
    assert not lists.poll()  # poll never reads the files
    lists.reload()  # SIGHUP
    assert [m.colour for m in lists.snapshot.match(35693803564380)] == [ListColour.BLACK]
    assert lists.snapshot.match(35209900176148) == []
    # a bad edit: logged, previous entries kept, the reload still happens
    _write(src, "black,imei,123,,bad")
    lists.store.add(make_entry("grey", "tac", "35000001"))
    lists.reload()
    assert lists.import_error is not None and "l.csv: row 1" in lists.import_error
    assert lists.snapshot.match(35693803564380) and lists.snapshot.match(35000001000000)
    _write(src, "black,imei,35693803564380,,b")
    lists.reload()
    assert lists.import_error is None
    lists.store.close()


def test_missing_import_file_is_a_list_error(tmp_path: Path) -> None:
    with pytest.raises(ListError, match=r"nope\.csv: cannot read"):
        open_operator_lists(tmp_path / "l.sqlite", [tmp_path / "nope.csv"])


def test_old_database_gets_source_column_rows_stay_manual(tmp_path: Path) -> None:
    db, src = tmp_path / "old.sqlite", tmp_path / "l.csv"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE entries (colour TEXT NOT NULL, kind TEXT NOT NULL, first INTEGER NOT NULL,"
        " last INTEGER NOT NULL, imsi TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',"
        " created REAL NOT NULL, updated REAL NOT NULL,"
        " PRIMARY KEY (kind, colour, first, last, imsi)) WITHOUT ROWID;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('version', '7');"
        "INSERT INTO entries VALUES ('black','tac',35000001,35000001,'','old',1.0,1.0);"
    )
    conn.commit()
    conn.close()
    # the file brings the old row: it was there before, so it stays manual
    _write(src, "black,tac,35000001,,old", "black,imei,35209900176148,,new")
    store = ListStore(db)
    try:
        store.import_files([src])
        _write(src, "grey,tac,35000002,,x")
        store.import_files([src])
        assert _values(store) == {"black 35000001", "grey 35000002"}
        assert store.version() == 9
    finally:
        store.close()
    ListStore(db).close()  # opening a migrated database again is fine


# deadline=None: each example opens a database; a loaded machine must not fail it on time.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10**8 - 1), st.integers(0, 4_000_000_000),
                          st.integers(0, 10**6)), min_size=1, max_size=15,
                unique_by=lambda t: t[0]))
def test_export_read_csv_keeps_timestamps(
    tmp_path: Path, rows: list[tuple[int, int, int]]
) -> None:
    db = tmp_path / "p.sqlite"
    for stale in (db, db.with_name("p.sqlite-wal"), db.with_name("p.sqlite-shm")):
        stale.unlink(missing_ok=True)  # tmp_path is shared by every example
    store = ListStore(db)
    try:
        for tac, created, later in rows:
            e = make_entry("black", "tac", f"{tac:08d}")
            store.add(e, now=float(created))
            store.add(e, now=float(created + later))
        out = io.StringIO()
        store.export_csv(out)
        path = tmp_path / "p.csv"
        path.write_text(out.getvalue())
        got = {e.first: (e.created, e.updated) for e in read_csv(path)}
        assert got == {t: (float(c), float(c + d)) for t, c, d in rows}
    finally:
        store.close()
