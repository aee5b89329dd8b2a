"""The command line against ``[state] backend = "postgresql"`` (a real PostgreSQL): lists, tac
and check answer as with SQLite; ``state migrate`` copies an SQLite state whole, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli._common import EXIT_FAILED, EXIT_OK
from gateway.lists import ListStore, entry_json
from tests.gateway.test_cli import _in_tmp, run  # noqa: F401 - _in_tmp: autouse fixture
from tests.postgres_server import PostgresServer

pytest.importorskip("asyncpg", reason="asyncpg is not installed (the 'postgresql' extra)")

from gateway.pg.database import Database
from gateway.pg.lists import PgListStore


def _postgresql(monkeypatch: pytest.MonkeyPatch, dsn: str) -> None:
    monkeypatch.setenv("EIR_STATE_BACKEND", "postgresql")
    monkeypatch.setenv("EIR_STATE_DSN", dsn)


def test_lists_tac_and_check_against_postgresql(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_dsn: str,
    tmp_path: Path,
) -> None:
    _postgresql(monkeypatch, postgres_dsn)
    code, out, _ = run(capsys, "check", "35209900111111", "--json")
    assert code == EXIT_OK and '"decided_by": "clean"' in out
    code, out, _ = run(capsys, "lists", "add", "black", "imei", "35209900111111", "--reason", "x")
    assert code == EXIT_OK and out.startswith(f"added black imei 35209900111111 to {postgres_dsn}")
    code, out, _ = run(capsys, "lists", "show", "--list", "black", "--kind", "imei")
    assert code == EXIT_OK and "black imei  35209900111111  x" in out
    code, out, _ = run(capsys, "check", "35209900111111", "--json")
    assert code == EXIT_OK and '"decided_by": "blacklisted"' in out
    # The sample TAC file of the embedded config was imported into PostgreSQL by check.
    code, out, _ = run(capsys, "tac", "show", "35209900")
    assert code == EXIT_OK and "35209900  Example Handsets Ltd" in out
    code, _, err = run(capsys, "tac", "show", "11111111")
    assert code == EXIT_FAILED and f"TAC 11111111 is not in {postgres_dsn}" in err
    assert not (tmp_path / "var" / "tac.sqlite").exists()
    assert not (tmp_path / "var" / "lists.sqlite").exists()
    code, _, err = run(capsys, "lists", "remove", "grey", "tac", "35000001")
    assert code == EXIT_FAILED and postgres_dsn in err


def test_unreachable_database_is_a_clean_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
) -> None:
    from tests.redis_server import free_port

    _postgresql(monkeypatch, f"postgresql://eir:secret@127.0.0.1:{free_port()}/x")
    code, _, err = run(capsys, "lists", "show")
    assert code == EXIT_FAILED and "cannot open the lists database" in err
    assert "secret" not in err and "Traceback" not in err


def test_state_migrate_copies_everything_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_dsn: str,
    tmp_path: Path,
) -> None:
    # An SQLite state, as the embedded default makes it (sample TAC file and lists imported),
    # plus a manual change and an observation.
    assert run(capsys, "lists", "add", "grey", "tac", "35000001", "--reason", "watch")[0] == 0
    assert run(capsys, "check", "35209900176148", "--imsi", "001010000000001")[0] == 0
    from gateway.observations import ObservationLog

    log = ObservationLog(tmp_path / "var" / "observations.sqlite")
    log.start()
    log.record("35209900176148", "001010000000001", 1_800_000_000.0)
    log.close()
    sqlite = ListStore(tmp_path / "var" / "lists.sqlite")
    expected = [entry_json(e) for e in sqlite.page(limit=1000)]
    audit = [(r.seq, r.actor, r.action, r.target) for r in sqlite.audit(limit=1000)]
    version = sqlite.version()
    sqlite.close()

    monkeypatch.setenv("EIR_STATE_DSN", postgres_dsn)
    code, out, _ = run(capsys, "state", "migrate")
    assert code == EXIT_OK, out
    assert f"lists version {version}" in out and "observations 1" in out
    pg = PgListStore(Database(postgres_dsn))
    try:
        assert [entry_json(e) for e in pg.page(limit=1000)] == expected
        assert [(r.seq, r.actor, r.action, r.target) for r in pg.audit(limit=1000)] == audit
        assert pg.version() == version and pg.changes(0) is None
        assert pg.load().counts() == ListStore(tmp_path / "var" / "lists.sqlite").load().counts()
    finally:
        pg.close()
    # Served from PostgreSQL now: the same answers, the next audit record numbered after.
    _postgresql(monkeypatch, postgres_dsn)
    code, out, _ = run(capsys, "tac", "show", "35209900")
    assert code == EXIT_OK
    assert run(capsys, "lists", "add", "black", "imei", "35693803564380")[0] == EXIT_OK
    code, out, _ = run(capsys, "lists", "audit", "--after", str(audit[-1][0]))
    assert code == EXIT_OK and "35693803564380" in out
    # A second migration into the same (no longer empty) database is refused.
    code, _, err = run(capsys, "state", "migrate")
    assert code == EXIT_FAILED and "already holds" in err and "nothing written" in err


def test_run_without_its_database_stops_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
) -> None:
    from tests.redis_server import free_port

    dsn = f"postgresql://eir:secret@127.0.0.1:{free_port()}/x"
    _postgresql(monkeypatch, dsn)
    for key, value in (("DIAMETER_LISTEN", "tcp://127.0.0.1:0"), ("METRICS_LISTEN", "127.0.0.1:0"),
                       ("N5G_EIR_LISTEN", "http://127.0.0.1:0")):
        monkeypatch.setenv(f"EIR_{key}", value)
    code, _, err = run(capsys, "run")
    assert code == EXIT_FAILED and "cannot start" in err
    assert dsn.replace("secret", "***") in err and "secret" not in err


@pytest.mark.parametrize(("row", "says"), [
    # Text where SQLite's REAL and INTEGER columns hold text (its types are affinities: a
    # hand-edited or damaged file), bytes that are not UTF-8, a NUL PostgreSQL's text refuses.
    ("'35209900176148', '001010000000001', 'yesterday', 2.0, 1", "must be real number"),
    ("'35209900176148', '001010000000001', 1.0, 2.0, 'many'", "cannot be interpreted"),
    ("'35209900176148', CAST(x'3030ff' AS TEXT), 1.0, 2.0, 1", "UTF-8"),
    ("'35209900176148', '00' || char(0) || '1', 1.0, 2.0, 1", "0x00"),
])
def test_state_migrate_with_a_row_it_cannot_copy_says_where_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_dsn: str,
    tmp_path: Path, row: str, says: str,
) -> None:
    import sqlite3

    from gateway.observations import ObservationLog

    assert run(capsys, "lists", "add", "grey", "tac", "35000001")[0] == EXIT_OK
    path = tmp_path / "var" / "observations.sqlite"
    log = ObservationLog(path)
    log.start()
    log.record("35209900176148", "001010000000002", 1_800_000_000.0)
    log.close()
    conn = sqlite3.connect(path)
    conn.execute(f"INSERT INTO observations VALUES ({row})")
    conn.commit()
    conn.close()

    monkeypatch.setenv("EIR_STATE_DSN", postgres_dsn)
    code, _, err = run(capsys, "state", "migrate")
    assert code == EXIT_FAILED and "nothing written" in err and says in err
    assert "observations.sqlite: table observations, rows 1-" in err
    db = Database(postgres_dsn)
    try:
        for table in ("entries", "audit", "tac", "observations"):
            assert db.run(lambda conn, t=table: conn.fetchval(f"SELECT count(*) FROM {t}")) == 0
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize(("escape", "says"), [
    ("\\u0000", "reason: a NUL character"),
    ("\\ud800", "reason: an unpaired surrogate (\\ud800), not UTF-8 text"),
])
def test_a_reason_that_cannot_be_stored_is_refused_naming_its_row_on_both_backends(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_dsn: str,
    tmp_path: Path, backend: str, escape: str, says: str,
) -> None:
    """JSON's "\\u0000" puts a NUL in a reason: SQLite stored it, PostgreSQL's text refused the
    whole import as a database error naming no row. JSON's "\\ud800" alone is a lone
    surrogate, which no UTF-8 encodes: a traceback (UnicodeEncodeError) on both. Now both
    refuse the row, nothing imported."""
    if backend == "postgresql":
        _postgresql(monkeypatch, postgres_dsn)
    (tmp_path / "l.jsonl").write_text(
        '{"list":"black","kind":"imei","value":"35693803564380","reason":"ok"}\n'
        '{"list":"black","kind":"imei","value":"35209900176148","reason":"a' + escape + 'b"}\n')
    code, _, err = run(capsys, "lists", "import", "l.jsonl")
    assert code == EXIT_FAILED and "nothing imported" in err
    assert f"l.jsonl: line 2: {says}" in err
    code, out, _ = run(capsys, "lists", "export", "--format", "jsonl")
    assert code == EXIT_OK and "35693803564380" not in out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_tac_line_with_a_nul_is_a_bad_line_on_both_backends(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_dsn: str,
    tmp_path: Path, backend: str,
) -> None:
    """A NUL in a TAC file's manufacturer or model: SQLite stored it, PostgreSQL's text
    refused the whole import as a database error (--skip-bad could not skip it). Now a bad
    line on both, named, and skipped with --skip-bad."""
    if backend == "postgresql":
        _postgresql(monkeypatch, postgres_dsn)
    (tmp_path / "t.csv").write_bytes(b"tac,manufacturer,model\n35000001,Good,One\n"
                                     b"35000002,Ba\x00d,Two\n35000003,Good,Th\x00ree\n")
    code, _, err = run(capsys, "tac", "import", "t.csv")
    assert code == EXIT_FAILED and "t.csv:3: a NUL character" in err
    code, out, err = run(capsys, "tac", "import", "t.csv", "--skip-bad")
    assert code == EXIT_OK and "1 TACs imported" in out and "2 bad lines" in out, err
    assert run(capsys, "tac", "show", "35000002")[0] != EXIT_OK


def test_state_migrate_interrupted_or_with_an_odd_lists_version_writes_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_dsn: str,
    tmp_path: Path,
) -> None:
    """Interrupted after a chunk was copied (Ctrl-C): nothing stays, and the next run copies
    everything. A lists version that is not an integer (a hand-edited file) is a clear error,
    not a traceback (ValueError), and writes nothing."""
    import sqlite3

    from gateway.pg import migrate as pg_migrate

    assert run(capsys, "lists", "add", "grey", "tac", "35000001")[0] == EXIT_OK
    assert run(capsys, "lists", "add", "grey", "tac", "35000002")[0] == EXIT_OK
    monkeypatch.setenv("EIR_STATE_DSN", postgres_dsn)
    monkeypatch.setattr(pg_migrate, "CHUNK", 1)
    real_copy = pg_migrate._copy

    def interrupted(*args: object) -> object:
        if args[0] == "audit":
            raise KeyboardInterrupt
        return real_copy(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pg_migrate, "_copy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(capsys, "state", "migrate")
    monkeypatch.setattr(pg_migrate, "_copy", real_copy)
    db = Database(postgres_dsn)
    try:
        assert db.run(lambda conn: conn.fetchval("SELECT count(*) FROM entries")) == 0
        conn = sqlite3.connect(tmp_path / "var" / "lists.sqlite")
        conn.execute("UPDATE meta SET value = 'two' WHERE key = 'version'")
        conn.commit()
        code, _, err = run(capsys, "state", "migrate")
        assert code == EXIT_FAILED and "nothing written" in err
        assert "lists.sqlite: the lists version 'two' is not an integer" in err
        assert db.run(lambda conn: conn.fetchval("SELECT count(*) FROM entries")) == 0
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'version'")
        conn.commit()
        conn.close()
        code, out, _ = run(capsys, "state", "migrate")
        assert code == EXIT_OK and "entries 2" in out and "lists version 2" in out
    finally:
        db.close()
