"""`eir-gateway lists ...` and `tac import`: which store changed, clean errors, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tests.gateway.test_cli import _in_tmp, run  # noqa: F401 - _in_tmp: autouse fixture


def test_changes_name_the_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = (tmp_path / "var" / "lists.sqlite").resolve()
    code, out, _ = run(capsys, "lists", "add", "black", "imei", "35209900176148")
    assert code == EXIT_OK and out.startswith(f"added black imei 35209900176148 to {db}; version")
    src = tmp_path / "in.csv"
    src.write_text("grey,tac,35000001,,t\n")
    code, out, _ = run(capsys, "lists", "import", str(src))
    assert code == EXIT_OK and f"1 entries imported into {db}; version" in out
    code, out, _ = run(capsys, "lists", "remove", "black", "imei", "35209900176148")
    assert code == EXIT_OK and out.startswith(f"removed black imei 35209900176148 from {db};")
    code, _, err = run(capsys, "lists", "remove", "black", "imei", "35209900176148")
    assert code == EXIT_FAILED and str(db) in err


def test_duplicate_rows_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "dup.csv"
    src.write_text("black,imei,35209900176148,,a\nblack,imei,352099001761481,,b\n")
    code, _, err = run(capsys, "lists", "import", str(src))
    assert code == EXIT_FAILED and "row 2 repeats row 1" in err and "nothing imported" in err
    src.write_bytes(b"black,imei,35209900176148,,caf\xe9\n")
    code, _, err = run(capsys, "lists", "import", str(src))
    assert code == EXIT_FAILED and "dup.csv: line 1: not UTF-8" in err
    assert "Traceback" not in err


def test_corrupt_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "var" / "lists.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"this is not an SQLite database" * 100)
    for argv in (["show"], ["export"], ["add", "black", "tac", "35000001"]):
        code, _, err = run(capsys, "lists", *argv)
        assert code == EXIT_FAILED, argv
        assert f"{db.resolve()}: cannot open the lists database" in err
        assert "Traceback" not in err


def test_export_to_missing_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "x.csv"
    code, _, err = run(capsys, "lists", "export", str(target))
    assert code == EXIT_USAGE and f"cannot write {target}" in err
    code, _, err = run(capsys, "lists", "export", str(tmp_path / "ok.csv"))
    assert code == EXIT_OK and (tmp_path / "ok.csv").read_text().startswith("list,kind,value")


def test_tac_replace_with_empty_file_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "tac", "show", "35209900")[0] == EXIT_OK  # sample file imported
    empty = tmp_path / "EMPTY.txt"
    empty.write_text("")
    code, _, err = run(capsys, "tac", "import", str(empty), "--replace")
    assert code == EXIT_FAILED and "EMPTY.txt: no valid rows" in err
    code, out, _ = run(capsys, "tac", "show", "35209900")  # the TAC table is intact
    assert code == EXIT_OK and "Example Handsets Ltd" in out


def test_lists_changes_are_audited_and_imports_show_progress(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "lists", "add", "black", "imei", "35209900176148", "--reason", "a")[0] == 0
    assert run(capsys, "lists", "remove", "black", "imei", "35209900176148")[0] == 0
    src = tmp_path / "many.csv"
    src.write_text("".join(f"grey,imei,{10**13 + i:014d},,bulk\n" for i in range(5000)))
    code, out, err = run(capsys, "lists", "import", str(src))
    assert code == EXIT_OK and "5000 entries imported" in out and "entries/s" in out
    # Not a terminal: one line per 10%, ending at 100% with the rate.
    steps = [line for line in err.splitlines() if line.startswith(f"{src}: ")]
    assert steps[-1].startswith(f"{src}: 100.0% 5000 rows") and "rows/s" in steps[-1]
    assert 2 <= len(steps) <= 11
    code, out, _ = run(capsys, "lists", "audit")
    actions = [line.split()[3] for line in out.splitlines()]
    assert code == EXIT_OK and actions == ["create", "delete", "import"]
    assert all(line.split()[2].startswith("cli:") for line in out.splitlines())
    code, out, _ = run(capsys, "lists", "audit", "--target", "black/imei:35209900176148")
    assert len(out.splitlines()) == 2 and '"reason":"a"' in out.splitlines()[1]
    dump = tmp_path / "dump.jsonl"
    assert run(capsys, "lists", "export", str(dump))[0] == EXIT_OK
    assert dump.read_text().startswith('{"list":')
    code, out, _ = run(capsys, "lists", "import", str(dump))
    assert code == EXIT_OK and "5000 entries imported" in out


def test_configured_import_files_are_audited(tmp_path: Path) -> None:
    from gateway.lists import IMPORT_FILES_ACTOR, ListStore

    src = tmp_path / "file.csv"
    src.write_text("black,imei,35209900176148,,a\ngrey,tac,35000001,,b\n")
    store = ListStore(tmp_path / "l.sqlite")
    try:
        store.import_files([src])
        src.write_text("black,imei,35209900176148,,a\n")  # one entry less
        st = src.stat()
        import os

        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        store.import_files([src])
        first, second = store.audit(actor=IMPORT_FILES_ACTOR)
        assert first.action == "import" and first.target == f"import:{src.resolve()}"
        assert first.after == {"file": str(src.resolve()), "entries": 2, "removed": 0}
        assert second.after == {"file": str(src.resolve()), "entries": 1, "removed": 1}
    finally:
        store.close()
