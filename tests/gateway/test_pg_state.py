"""``[state] backend = "postgresql"`` against a real PostgreSQL (tests/postgres_server.py): the
lists store answers as the SQLite one does (same operations on both, compared), its change
sequence brings a snapshot forward exactly, COPY imports, the TAC table and the observation log.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.clone_tracker import CloneTracker
from gateway.lists import (
    EntryExists,
    EntryKind,
    ListColour,
    ListError,
    ListStore,
    OperatorLists,
    entry_json,
    make_entry,
)
from tests.postgres_server import PostgresServer

pytest.importorskip("asyncpg", reason="asyncpg is not installed (the 'postgresql' extra)")

from gateway.pg import observations as pg_observations
from gateway.pg import tac as pg_tac
from gateway.pg.database import Database, StateError
from gateway.pg.lists import DELTA_LIMIT, PgListStore
from gateway.pg.observations import PgObservationLog

IMEI = "35209900176148"


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[PgListStore]:
    store = PgListStore(Database(postgres_dsn))
    yield store
    store.close()


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[ListStore]:
    store = ListStore(tmp_path / "lists.sqlite")
    yield store
    store.close()


def _write(path: Path, *rows: str) -> None:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _random_entry(rng: random.Random) -> object:
    colour = rng.choice(["black", "grey", "white"])
    kind = rng.choice(["imei", "imei", "range", "tac", "pair"])
    body = 35209900000000 + rng.randrange(50) * 1_000_003 % 10**8
    imei = f"{body:014d}"
    if kind == "tac":
        return make_entry(colour, kind, imei[:8], reason="t")
    if kind == "range":
        return make_entry(colour, kind, f"{imei}-{body + rng.randrange(100):014d}", reason="r")
    if kind == "pair":
        return make_entry(colour, kind, imei, f"00101000000000{rng.randrange(3)}", "p")
    return make_entry(colour, kind, imei, reason=f"why {rng.randrange(5)}")


def test_same_operations_same_answers_as_sqlite(pg: PgListStore, sqlite: ListStore) -> None:
    rng = random.Random(13)
    now = 1_800_000_000.0
    for step in range(150):
        entry = _random_entry(rng)
        if rng.random() < 0.3:
            assert (pg.delete(entry, "cli:t", now=now + step) is None) == (  # type: ignore[arg-type]
                sqlite.delete(entry, "cli:t", now=now + step) is None)  # type: ignore[arg-type]
        else:
            before_pg, after_pg = pg.put(entry, "cli:t", now=now + step)  # type: ignore[arg-type]
            before_sq, after_sq = sqlite.put(entry, "cli:t", now=now + step)  # type: ignore[arg-type]
            assert (entry_json(before_pg), entry_json(after_pg)) == (
                entry_json(before_sq), entry_json(after_sq))
    assert [entry_json(e) for e in pg.entries()] == [entry_json(e) for e in sqlite.entries()]
    for colour in (None, ListColour.BLACK):
        for kind in (None, EntryKind.RANGE):
            assert pg.page(colour, kind, None, 7) == sqlite.page(colour, kind, None, 7)
    first = sqlite.page(None, None, None, 10)[-1]
    key = (first.kind.value, first.colour.value, first.first, first.last, first.imsi)
    assert pg.page(after=key, limit=10) == sqlite.page(after=key, limit=10)
    for n in range(0, 50, 7):
        body = 35209900000000 + n * 1_000_003 % 10**8
        assert sorted(map(entry_json, pg.matching(body)), key=str) == sorted(
            map(entry_json, sqlite.matching(body)), key=str)
    assert [(r.actor, r.action, r.target, r.before, r.after) for r in pg.audit(limit=1000)] == [
        (r.actor, r.action, r.target, r.before, r.after) for r in sqlite.audit(limit=1000)]
    assert pg.audit(action="delete", limit=3) and all(
        r.action == "delete" for r in pg.audit(action="delete", limit=3))
    for body in range(35209900000000, 35209900000000 + 50 * 1_000_003, 1_000_003):
        assert {(m.colour, m.entry.kind, m.entry.first) for m in pg.load().match(body)} == {
            (m.colour, m.entry.kind, m.entry.first) for m in sqlite.load().match(body)}


def test_create_only_and_the_audit_log_is_append_only(pg: PgListStore) -> None:
    entry = make_entry("black", "imei", IMEI, reason="stolen")
    pg.put(entry, "api:oss", create_only=True)
    with pytest.raises(EntryExists):
        pg.put(entry, "api:oss", create_only=True)
    with pytest.raises(StateError, match="append-only"):
        pg.db.run(lambda conn: conn.execute("DELETE FROM audit"))
    assert [r.action for r in pg.audit()] == ["create"]


def test_changes_bring_a_snapshot_to_the_store_version(pg: PgListStore) -> None:
    lists = OperatorLists(pg)
    lists.snapshot = pg.load()
    stolen = make_entry("black", "imei", IMEI, reason="stolen")
    pg.put(stolen, "cli:t")
    pg.put(make_entry("grey", "tac", "35693803"), "cli:t")
    changes = pg.changes(lists.snapshot.version)
    assert changes is not None and [c.version for c in changes] == [1, 2]
    before = lists.snapshot
    assert lists.poll()
    assert lists.snapshot.version == pg.version() == 2
    assert [m.colour for m in lists.snapshot.match(int(IMEI))] == [ListColour.BLACK]
    assert [m.colour for m in lists.snapshot.match(35693803000000)] == [ListColour.GREY]
    assert before.match(int(IMEI)) == []  # the old snapshot is left as it was
    pg.delete(stolen, "cli:t")
    assert lists.poll() and lists.snapshot.match(int(IMEI)) == []
    assert not lists.poll()


def test_a_large_import_is_announced_as_a_reload(pg: PgListStore, tmp_path: Path) -> None:
    lists = OperatorLists(pg)
    lists.snapshot = pg.load()
    path = tmp_path / "big.csv"
    rows = [f"black,imei,{35209900000000 + i * 10:014d},," for i in range(DELTA_LIMIT + 1)]
    _write(path, *rows)
    from gateway.provisioning import Provisioning

    assert Provisioning(pg).import_file(path, "csv", "cli:t") == DELTA_LIMIT + 1
    assert pg.changes(0) is None  # a reload: only a full load brings it
    assert lists.poll()
    assert lists.snapshot.counts()["black.imei"] == DELTA_LIMIT + 1


def test_import_is_all_or_nothing_and_names_a_repeat_as_sqlite_does(
    pg: PgListStore, sqlite: ListStore, tmp_path: Path
) -> None:
    from gateway.provisioning import Provisioning

    path = tmp_path / "l.csv"
    _write(path, "list,kind,value,imsi,reason", f"black,imei,{IMEI},,a",
           "grey,tac,35693803,,b", f"black,imei,{IMEI},,again")
    messages = []
    for store in (pg, sqlite):
        with pytest.raises(ListError) as raised:
            Provisioning(store).import_file(path, "csv", "cli:t")
        messages.append(str(raised.value))
        assert list(store.entries()) == []
    assert messages[0] == messages[1] and "row 4 repeats row 2" in messages[0]
    _write(path, f"black,imei,{IMEI},,a", "grey,tac,1234,,b")  # bad TAC on row 2
    with pytest.raises(ListError, match="row 2"):
        Provisioning(pg).import_file(path, "csv", "cli:t")
    assert list(pg.entries()) == [] and pg.version() == 0
    _write(path, f"black,imei,{IMEI},,a", "grey,tac,35693803,,b")
    assert Provisioning(pg).import_file(path, "csv", "cli:t") == 2
    changes = pg.changes(0)  # a small import: announced entry by entry
    assert changes is not None and {c.entry.kind for c in changes if c.entry} == {
        EntryKind.IMEI, EntryKind.TAC}
    (record,) = pg.audit(action="import")
    assert record.after is not None and record.after["entries"] == 2


def test_import_files_are_authoritative_for_their_entries(
    pg: PgListStore, tmp_path: Path
) -> None:
    src = tmp_path / "ops.csv"
    _write(src, f"black,imei,{IMEI},,a", "grey,tac,35693803,,b")
    assert pg.import_files([src]) == {src.resolve(): 2}
    assert pg.import_files([src]) == {}  # unchanged: not read again
    pg.put(make_entry("white", "imei", "35693803564380"), "cli:t")  # manual: never removed
    time.sleep(0.01)
    _write(src, "grey,tac,35693803,,b")
    lists = OperatorLists(pg)
    lists.snapshot = pg.load()
    pg.import_files([src])
    assert [e.value for e in pg.entries()] == ["35693803564380", "35693803"]
    assert lists.poll()  # the removal reaches the snapshot as a change
    assert lists.snapshot.match(int(IMEI)) == []
    assert [r.actor for r in pg.audit(action="import")] == ["config:lists.import_files"] * 2


def test_bulk_add_imeis_with_copy(pg: PgListStore) -> None:
    bodies = range(35209900000000, 35209900000000 + 250_000, 10)
    assert pg.bulk_add_imeis(ListColour.BLACK, bodies, "bulk", chunk=5_000) == len(bodies)
    snapshot = pg.load()
    assert snapshot.counts()["black.imei"] == len(bodies)
    assert snapshot.match(35209900000010) and not snapshot.match(35209900000011)


def test_unreachable_database_is_a_state_error(postgres_server: PostgresServer) -> None:
    from tests.redis_server import free_port

    with pytest.raises(StateError, match=r"cannot connect|refused"):
        Database(f"postgresql://eir@127.0.0.1:{free_port()}/postgres")


def test_tac_import_and_load(postgres_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "tac.csv"
    _write(path, "tac,manufacturer,model", "35209900,Acme,Phone 1", "86000001,Other,X")
    db = Database(postgres_dsn)
    try:
        assert pg_tac.import_if_changed(db, path)
        assert not pg_tac.import_if_changed(db, path)
        tac = pg_tac.load(db)
        assert len(tac) == 2 and tac.lookup("35209900").model == "Phone 1"  # type: ignore[union-attr]
        empty = tmp_path / "empty.csv"
        _write(empty, "tac,manufacturer,model")
        with pytest.raises(Exception, match="refusing to replace"):
            pg_tac.import_tac_file(db, empty, replace=True)
        assert len(pg_tac.load(db)) == 2
    finally:
        db.close()


def test_observation_log_history_and_clone_seed(postgres_dsn: str) -> None:
    log = PgObservationLog(postgres_dsn, batch_size=2)
    log.start()
    now = time.time()
    log.record(IMEI, "001010000000001", now - 10)
    log.record(IMEI, "001010000000001", now - 5)
    log.record(IMEI, "001010000000002", now - 1)
    log.record("35693803564380", "001010000000003", now - 100_000)  # outside the window
    log.flush()
    import threading

    answered = threading.Event()
    found: list[object] = []

    def reply(last: object, failed: bool) -> None:
        found.append((last, failed))
        answered.set()

    log.last_imsi(IMEI, now - 2, reply)  # the IMSI before the last sighting: for new_imsi events
    assert answered.wait(10)
    assert found == [(("001010000000001", pytest.approx(now - 5)), False)]
    log.close()
    assert log.stats.written == 4 and log.stats.errors == 0
    db = Database(postgres_dsn)
    try:
        rows = pg_observations.history(db, IMEI)
        assert [(r[0], r[3]) for r in rows] == [("001010000000001", 2), ("001010000000002", 1)]
        assert rows[0][1] == pytest.approx(now - 10) and rows[0][2] == pytest.approx(now - 5)
        tracker = CloneTracker(threshold=1, window=3600)
        assert pg_observations.seed(tracker, db, now) == 2
        assert set(tracker.imsis(IMEI, now)) == {"001010000000001", "001010000000002"}
    finally:
        db.close()


def test_notify_wakes_a_watching_store(postgres_dsn: str) -> None:
    import threading

    writer, watcher = PgListStore(Database(postgres_dsn)), PgListStore(Database(postgres_dsn))
    woken = threading.Event()
    try:
        assert watcher.watch(woken.set)
        assert woken.wait(10)  # once at (re)connection: what was missed meanwhile
        woken.clear()
        writer.put(make_entry("black", "imei", IMEI), "cli:t")
        assert woken.wait(10)
    finally:
        watcher.close()
        writer.close()


async def test_list_changes_reach_a_follower_after_postgresql_restarts(
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL restarted under a following gateway (every connection of its pool and its
    LISTEN connection cut): a change made once it is back reaches the snapshot, by the poll
    (once a second while the store announces changes) or the LISTEN made again."""
    import asyncio

    from gateway.list_updates import follow_lists
    from gateway.lists import OperatorLists

    dsn = await asyncio.to_thread(postgres_server.create_database)
    lists = OperatorLists(PgListStore(Database(dsn)))
    lists.reload()
    versions: list[int] = []
    following = asyncio.create_task(follow_lists(lists, 60.0, versions.append))
    writer = PgListStore(Database(dsn))
    try:
        await asyncio.to_thread(writer.put, make_entry("black", "imei", IMEI), "cli:t")
        assert await _eventually(lambda: bool(lists.snapshot.match(int(IMEI))))
        await asyncio.to_thread(postgres_server.restart)
        await asyncio.to_thread(writer.put, make_entry("grey", "imei", "35693803564380"), "cli:t")
        assert await _eventually(lambda: bool(lists.snapshot.match(35693803564380)))
        assert versions[-1] == writer.version()
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await asyncio.to_thread(writer.close)
        assert lists.store is not None
        await asyncio.to_thread(lists.store.close)


async def _eventually(condition: Callable[[], bool]) -> bool:
    import asyncio

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def test_bulk_add_imeis_unsorted_with_repeats_loads_sorted_and_unique(pg: PgListStore) -> None:
    # The merge inserts in the primary key's order; the full load reads binary COPY: the
    # snapshot must hold each IMEI once, in order, whatever order and repeats came in.
    rng = random.Random(7)
    bodies = [35209900000000 + rng.randrange(100_000) for _ in range(30_000)]
    pg.bulk_add_imeis(ListColour.GREY, bodies, "bulk", chunk=7_000)
    pg.bulk_add_imeis(ListColour.GREY, bodies[:1_000], "again")  # existing: updated
    snapshot = pg.load()
    assert list(snapshot._colours[ListColour.GREY].imeis) == sorted(set(bodies))
    for body in bodies[:200]:
        assert snapshot.match(body)
    assert not snapshot.match(35209900000000 + 100_000)


def test_workers_of_a_host_share_one_snapshot_file_per_version(
    postgres_dsn: str, tmp_path: Path
) -> None:
    # lists.shared_snapshot: two stores (two workers) load at once; one writes each colour's
    # file, both map it and answer as a store without files; a bulk write's version gets new
    # files, and the old ones go once neither worker maps them.
    import gc
    import threading

    from gateway.lists import ListSnapshot

    plain = PgListStore(Database(postgres_dsn))
    workers = [PgListStore(Database(postgres_dsn), tmp_path) for _ in range(2)]
    try:
        plain.bulk_add_imeis(ListColour.BLACK, range(35209900000000, 35209900300000, 3), "b")
        plain.put(make_entry("white", "range", "35209900000000-35209900000099"), "test")
        loaded: list[ListSnapshot | None] = [None, None]

        def load(n: int) -> None:
            loaded[n] = workers[n].load()

        threads = [threading.Thread(target=load, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        first, second = loaded
        assert first is not None and second is not None
        reference = plain.load()
        assert first.version == second.version == reference.version
        for body in (35209900000000, 35209900000003, 35209900000004, 35209900299999,
                     35209900300001):
            expected = [m.entry for m in reference.match(body)]
            assert [m.entry for m in first.match(body)] == expected
            assert [m.entry for m in second.match(body)] == expected
        files = sorted(p.name for p in tmp_path.glob("*.imeis"))
        assert len(files) == len(ListColour) and all(f"-{first.version}-" in f for f in files)

        plain.bulk_add_imeis(ListColour.BLACK, [35209900300001], "b")
        old_black = next(tmp_path.glob(f"*-{first.version}-black.imeis"))
        newer = workers[0].load()
        assert newer.match(35209900300001)
        del first
        loaded.clear()
        gc.collect()
        assert old_black.exists()  # the second worker maps it still (empty colours: no file
        del second                 # to map, removed at once)
        gc.collect()
        assert workers[1].load().version == newer.version  # its load removes the old files
        assert all(f"-{newer.version}-" in p.name for p in tmp_path.glob("*.imeis"))
    finally:
        plain.close()
        for store in workers:
            store.close()


def test_a_restarted_worker_maps_older_files_and_replays_the_changes_since(
    postgres_dsn: str, tmp_path: Path
) -> None:
    # A worker started after single changes maps the files the running workers map (no new
    # 100-million file to write) and answers as a store without files; after a bulk write it
    # writes this version's files, since no change log bridges a bulk write.
    plain = PgListStore(Database(postgres_dsn))
    running = PgListStore(Database(postgres_dsn), tmp_path)
    restarted = PgListStore(Database(postgres_dsn), tmp_path)
    try:
        plain.bulk_add_imeis(ListColour.BLACK, range(35209900000000, 35209900003000, 3), "b")
        plain.put(make_entry("white", "range", "35209900000000-35209900000099"), "t")
        first = running.load()
        for colour, kind, value, imsi in [
            ("black", "imei", "35209900000001", ""),  # added, beside the file's values
            ("grey", "imei", "35209900000002", ""),  # a colour with no IMEIs in the files
            ("black", "imei", "35209900000004", ""),  # added, then removed again below
            ("white", "range", "35209900000200-35209900000299", ""),
            ("grey", "tac", "35209901", ""),
            ("black", "pair", "35209900000005", "001010000000001"),
        ]:
            plain.put(make_entry(colour, kind, value, imsi), "t")
        plain.delete(make_entry("black", "imei", "35209900000003"), "t")  # in the file
        plain.delete(make_entry("black", "imei", "35209900000004"), "t")
        plain.delete(make_entry("white", "range", "35209900000000-35209900000099"), "t")
        plain.put(make_entry("white", "range", "35209900000000-35209900000099", reason="r"), "t")

        snapshot = restarted.load()
        reference = plain.load()
        assert snapshot.version == reference.version > first.version
        assert snapshot._colours[ListColour.BLACK].imeis.path == (
            tmp_path / f"lists-{first._colours[ListColour.BLACK].imeis.path.name.split('-')[1]}"
            f"-{first.version}-black.imeis")
        assert snapshot.counts() == reference.counts()
        for body in [*range(35209900000000, 35209900000010), 35209900000250, 35209900002997,
                     35209900002998, 35209901000000]:
            for imsi in (None, "001010000000001"):
                assert sorted(map(repr, (m.entry for m in snapshot.match(body, imsi)))) == \
                    sorted(map(repr, (m.entry for m in reference.match(body, imsi)))), body

        plain.bulk_add_imeis(ListColour.BLACK, [35209900009999], "b")
        after_bulk = restarted.load()
        black = after_bulk._colours[ListColour.BLACK].imeis
        assert black.path is not None and f"-{after_bulk.version}-" in black.path.name
        assert after_bulk.match(35209900009999)
        assert [m.entry.kind for m in after_bulk.match(35209900000003)] == [EntryKind.RANGE]
    finally:
        for store in (plain, running, restarted):
            store.close()


def test_a_full_load_finds_ranges_tacs_and_pairs_through_the_primary_key(
    pg: PgListStore,
) -> None:
    # At 100 million exact IMEIs, "kind <> 'imei'" read every row of the table for each colour.
    from gateway.pg.lists import OTHERS_OF_COLOUR

    pg.bulk_add_imeis(ListColour.BLACK, range(35209900000000, 35209900020000), "b")
    pg.db.run(lambda c: c.execute("ANALYZE entries"))
    plan = pg.db.run(lambda c: c.fetch("EXPLAIN " + OTHERS_OF_COLOUR, "black"))
    text = "\n".join(r[0] for r in plan)
    assert "Seq Scan" not in text and "entries_pkey" in text, text
