"""TAC import: both GSMA layouts, CSV, the IMEIDB rule, strict vs skip-bad, lookups."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.tac import (
    TacDatabase,
    TacImportError,
    import_tac_file,
    open_tac_database,
    parse_tac_file,
)

REPO = Path(__file__).resolve().parents[2]
IMEIDB = REPO.parent / "shared" / "data" / "imeidb" / "imeidb.csv"
if not IMEIDB.exists():
    IMEIDB = Path("/work/shared/data/imeidb/imeidb.csv")

H17 = (
    "TAC|Marketing Name|Internal Model Name|Manufacturer|Bands|Allocation Date|Country Code|"
    "Fixed Code|Manufacturer Code|Radio Interface|Brand Name|Model Name|Operating System|NFC|"
    "Bluetooth|WLAN|Device Type"
)
H20 = (
    "TAC|Marketing Name|Manufacturer (or) Applicant|Bands|5G Bands|LPWAN|Radio Interface|"
    "Brand Name|Model Name|Operating System|NFC|Bluetooth|WLAN|Device Type|Removable UICC|"
    "Removable EUICC|NonRemovable UICC|NonRemovable EUICC|Simslot|Imeiquantitysupport"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def row17(tac: str, manufacturer: str, model: str) -> str:
    cells = [tac, f"{model} marketing", "int", manufacturer, "GSM 900", "26-Apr-2016", "826",
             "NA", "X", "NONE", "Brand", model, "Android", "Y", "Y", "Y", "Smartphone"]
    return "|".join(cells)


def row20(tac: str, manufacturer: str, marketing: str) -> str:
    cells = [tac, marketing, manufacturer] + ["x"] * 17
    cells[8] = ""  # empty Model Name: falls back to Marketing Name
    return "|".join(cells)


def test_gsma_17_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "g.txt", "\n".join([H17, row17("35209900", "Ex Ltd", "One"),
                                               row17("35209901", "Ex Ltd", "Two")]) + "\n")
    records, summary = parse_tac_file(path)
    assert summary.format == "gsma" and summary.imported == 2
    assert records[35209900] == ("Ex Ltd", "One")


def test_gsma_20_columns_case_insensitive_header(tmp_path: Path) -> None:
    path = write(tmp_path, "g.txt", "\n".join([H20.upper(), row20("86000001", "QM", "QM-200")]))
    records, _ = parse_tac_file(path)
    assert records[86000001] == ("QM", "QM-200")


def test_gsma_bad_row_strict_names_file_and_line(tmp_path: Path) -> None:
    rows = [H17, row17("35209900", "A", "B"), "35209901|too|few", row17("1234", "A", "B")]
    text = "\n".join(rows)
    path = write(tmp_path, "g.txt", text)
    with pytest.raises(TacImportError, match=r"g\.txt:3: 3 columns, header has 17"):
        parse_tac_file(path)
    records, summary = parse_tac_file(path, skip_bad=True)
    assert list(records) == [35209900]
    assert [(b.line, b.problem) for b in summary.bad] == [
        (3, "3 columns, header has 17"), (4, "TAC '1234' is not 8 decimal digits")]


def test_gsma_header_without_manufacturer(tmp_path: Path) -> None:
    path = write(tmp_path, "g.txt", "TAC|Model Name\n35209900|x\n")
    with pytest.raises(TacImportError, match=r"g\.txt:1: header has no Manufacturer column"):
        parse_tac_file(path)


def test_csv_with_and_without_header_and_the_comma_rule(tmp_path: Path) -> None:
    with_header = write(tmp_path, "a.csv", "tac,manufacturer,model\n35209900,Ex,One\n")
    assert parse_tac_file(with_header)[0] == {35209900: ("Ex", "One")}
    messy = write(
        tmp_path, "b.csv",
        "35360700,CEC Telecom Co. Ltd.,CECT I368,,C116,C117,,\n"
        "35441200,China,,\n"
        '35218000,Celestica,"Quoted, with comma",,\n'
        "35215000,Adbon,Beijing,ADBON,,\n",
    )
    records, summary = parse_tac_file(messy)
    assert summary.format == "csv" and not summary.bad
    assert records[35360700] == ("CEC Telecom Co. Ltd.", "CECT I368,C116,C117")
    assert records[35441200] == ("China", "")
    assert records[35218000] == ("Celestica", "Quoted, with comma")
    assert records[35215000] == ("Adbon", "Beijing,ADBON")


def test_csv_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "35209900,Ex,One\n3520990X,Ex,Two\n35209901,,Three\n\n")
    with pytest.raises(TacImportError, match=r"b\.csv:2: TAC '3520990X'"):
        parse_tac_file(path)
    _, summary = parse_tac_file(path, skip_bad=True)
    assert [b.line for b in summary.bad] == [2, 3]
    assert "no manufacturer" in summary.bad[1].problem


def test_duplicates_last_wins_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "35209900,Ex,Old\n35209901,Ex,X\n35209900,Ex,New\n")
    records, summary = parse_tac_file(path)
    assert records[35209900] == ("Ex", "New") and summary.duplicates == 1
    assert "1 duplicate TACs" in summary.render()


def test_strict_import_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "tac.sqlite"
    good = write(tmp_path, "g.csv", "35209900,Ex,One\n")
    import_tac_file(db, good)
    bad = write(tmp_path, "b.csv", "35209901,Ex,Two\nnope,Ex,Three\n")
    with pytest.raises(TacImportError):
        import_tac_file(db, bad)
    count = sqlite3.connect(db).execute("SELECT count(*) FROM tac").fetchone()[0]
    assert count == 1
    summary = import_tac_file(db, bad, skip_bad=True)
    assert summary.imported == 1 and len(TacDatabase.load(db)) == 2


def test_lookup_and_memory_layout(tmp_path: Path) -> None:
    db = TacDatabase.from_records(
        {35209900: ("A", "m1"), 1234500: ("B", "m2"), 99000101: ("A", "m1")}
    )
    assert db.contains(1234500) and not db.contains(1234501)
    info = db.lookup("01234500")
    assert info is not None and (info.manufacturer, info.model) == ("B", "m2")
    assert db.lookup("0123450") is None and db.lookup("abcdefgh") is None
    assert db.lookup("99999999") is None


@given(st.dictionaries(st.integers(0, 99_999_999), st.sampled_from([("A", "m1"), ("B", "m2")]),
                       max_size=50), st.lists(st.integers(0, 99_999_999), max_size=20))
def test_contains_agrees_with_lookup(records: dict[int, tuple[str, str]], probes: list[int]) -> None:
    # contains (a set probe) against lookup (a bisect of the sorted array) and the records.
    db = TacDatabase.from_records(records)
    for tac in [*records, *probes]:
        assert db.contains(tac) == (tac in records) == (db.lookup(f"{tac:08d}") is not None)


def test_open_imports_changed_source_once(tmp_path: Path) -> None:
    src = write(tmp_path, "s.csv", "35209900,Ex,One\n")
    db_path = tmp_path / "tac.sqlite"
    assert len(open_tac_database(db_path, src)) == 1
    src.write_text("35209900,Ex,One\n35209901,Ex,Two\n")
    assert len(open_tac_database(db_path, src)) == 2


def test_progress_bar_on_a_tty_lines_otherwise(tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    path = write(tmp_path, "p.csv", "".join(f"{35209900 + i},Ex,One\n" for i in range(200)))
    tty, pipe = Tty(), io.StringIO()
    parse_tac_file(path, progress=tty)
    parse_tac_file(path, progress=pipe)
    # A terminal: one bar redrawn in place (carriage returns), with rate and ETA.
    assert tty.getvalue().startswith("\r[") and "rows/s, ETA" in tty.getvalue()
    assert tty.getvalue().endswith(f"{path}: 100.0% 200 rows, " + tty.getvalue().split(
        "200 rows, ")[-1]) and tty.getvalue().endswith("\n")
    # Not a terminal: a line per 10% (no carriage returns), the last at 100%.
    lines = pipe.getvalue().splitlines()
    assert "\r" not in pipe.getvalue() and 10 <= len(lines) <= 11
    assert lines[-1].startswith(f"{path}: 100.0% 200 rows, ") and "rows/s" in lines[-1]


def test_sample_file_loads_with_coordinated_tacs() -> None:
    records, summary = parse_tac_file(REPO / "config" / "tac-sample.txt")
    assert not summary.bad and summary.format == "gsma"
    for tac in (35209900, 35332011, 86000001, 1234500, 49015420, 35693803):
        assert tac in records


@pytest.mark.skipif(not IMEIDB.exists(), reason="shared/data/imeidb/imeidb.csv not present")
def test_imeidb_imports(tmp_path: Path) -> None:
    db = tmp_path / "tac.sqlite"
    summary = import_tac_file(db, IMEIDB)  # strict: every line readable under the rule
    assert summary.lines == 27_829 and not summary.bad
    assert summary.imported + summary.duplicates == summary.lines
    tacs = TacDatabase.load(db)
    assert len(tacs) == summary.imported
    info = tacs.lookup("35360700")
    assert info is not None and info.model.startswith("CECT I368,C116")


good_row = st.tuples(
    st.integers(0, 99_999_999).map(lambda n: f"{n:08d}"),
    st.text(alphabet="abcXYZ .-", min_size=1, max_size=8).filter(str.strip),
    st.text(alphabet="abc 123", max_size=8),
)
bad_row = st.sampled_from(["1234567,Ex,M", "abcdefgh,Ex,M", "123456789,Ex,M", "35209900,,M",
                           "35209900", ",Ex,M"])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(good_row.map(lambda r: ",".join(r)), bad_row), min_size=1, max_size=30))
def test_csv_bad_rows_always_named(tmp_path: Path, rows: list[str]) -> None:
    path = tmp_path / "h.csv"
    path.write_text("\n".join(rows) + "\n")
    expected_bad = [i for i, r in enumerate(rows, 1) if r in
                    {"1234567,Ex,M", "abcdefgh,Ex,M", "123456789,Ex,M", "35209900,,M",
                     "35209900", ",Ex,M"}]
    _, summary = parse_tac_file(path, skip_bad=True)
    assert [b.line for b in summary.bad] == expected_bad
    if expected_bad:
        with pytest.raises(TacImportError, match=rf"h\.csv:{expected_bad[0]}:"):
            parse_tac_file(path)


def test_gsma_quotes_and_latin1(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    row = row17('"35209900"', '"Société ""Exemple"""', "Un").encode("latin-1")
    path.write_bytes(H17.encode() + b"\n" + row + b"\n")
    records, _ = parse_tac_file(path)
    assert records[35209900] == ('Société "Exemple"', "Un")


@pytest.mark.parametrize(
    ("text", "skip_bad"),
    [("", False), ("\n\n", False), ("bad,row\nalso bad\n", True), (f"{H17}\n", False)],
)
def test_replace_with_no_valid_rows_is_refused(tmp_path: Path, text: str, skip_bad: bool) -> None:
    db = tmp_path / "tac.sqlite"
    import_tac_file(db, write(tmp_path, "good.csv", "35209900,Ex Ltd,One\n"))
    src = write(tmp_path, "empty.txt", text)
    with pytest.raises(TacImportError, match=r"empty\.txt: no valid rows.*refusing to replace"):
        import_tac_file(db, src, skip_bad=skip_bad, replace=True)
    assert len(TacDatabase.load(db)) == 1  # nothing changed
    import_tac_file(db, write(tmp_path, "new.csv", "35209901,Ex Ltd,Two\n"), replace=True)
    assert [TacDatabase.load(db).contains(t) for t in (35209900, 35209901)] == [False, True]
