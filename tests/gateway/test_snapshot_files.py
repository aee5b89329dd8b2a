"""Lists snapshot files shared by a host's workers (gateway/snapshot_files.py): the mapped
array answers as the in-memory one, one writer per file, and a file is removed only once no
process maps it (another process holding it, killed, or letting it go)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from array import array
from bisect import bisect_right
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.snapshot_files import TRAILER, SnapshotFiles
from gateway.sorted_imeis import BUCKET, SortedImeis

ROOT = Path(__file__).resolve().parents[2]


def write(files: SnapshotFiles, version: int, colour: str, values: list[int]) -> None:
    with files.writer(version, colour) as out:
        array("Q", values).tofile(out)


@given(
    st.lists(st.integers(0, 10**15) | st.integers(35209900000000, 35209900000999),
             max_size=BUCKET * 40).map(lambda v: sorted(set(v))),
    st.lists(st.integers(0, 10**15), max_size=50),
)
def test_a_mapped_file_answers_as_the_array(values: list[int], probes: list[int]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        files = SnapshotFiles(Path(directory), "db1")
        write(files, 3, "black", values)
        mapped = files.open(3, "black")
        assert mapped is not None and len(mapped) == len(values)
        if not values:
            assert mapped.path is None and not mapped.contains(0)
            return
        assert mapped.path == files.path(3, "black")
        assert list(mapped) == [mapped[i] for i in range(len(values))] == values
        # The table in the file is the one an in-memory snapshot builds.
        own = SortedImeis.of(array("Q", values))
        assert (mapped.base, mapped.shift, list(mapped.starts)) == (
            own.base, own.shift, list(own.starts))
        for probe in [*probes, *values[:: max(1, len(values) // 20)], values[-1] + 1,
                      values[0] - 1]:
            i = bisect_right(values, probe) - 1
            assert mapped.contains(probe) == (i >= 0 and values[i] == probe), probe


def test_absent_files_and_bad_ones(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path, "db1")
    assert files.open(1, "white") is None
    files.path(1, "white").write_bytes(b"\x00" * 12)  # no trailer
    with pytest.raises(ValueError, match="not a lists snapshot file"):
        files.open(1, "white")
    write(files, 3, "white", [35209900176148, 35209900176149])
    whole = files.path(3, "white").read_bytes()
    files.path(3, "white").write_bytes(whole[8:])  # a value lost: the sizes disagree
    with pytest.raises(ValueError, match="not 2 IMEIs"):
        files.open(3, "white")
    starts = TRAILER.unpack(whole[-TRAILER.size:])[4]
    last = 8 * 2 + 4 * (starts - 1)  # the last bucket start: 2, the count, made 0
    files.path(3, "white").write_bytes(whole[:last] + bytes(4) + whole[last + 4:])
    with pytest.raises(ValueError, match="does not end at 2"):
        files.open(3, "white")
    with pytest.raises(ValueError, match="not a whole number"), files.writer(4, "white") as out:
        out.write(b"\x01" * 12)
    with pytest.raises(ValueError, match="file-name-safe"):
        SnapshotFiles(tmp_path, "a-b")
    # A writer that fails leaves nothing behind, under either name.
    with pytest.raises(RuntimeError), files.writer(2, "white") as out:
        out.write(b"\x01" * 8)
        raise RuntimeError("the COPY broke")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lists-db1-1-white.imeis", "lists-db1-3-white.imeis"]


def test_one_builder_at_a_time(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path, "db1")
    with files.building(5, "grey") as first:
        assert first
        other: list[bool] = []

        def second() -> None:  # another open file description, as another process has
            with files.building(5, "grey") as mine:
                other.append(mine)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert other == [False]
    with files.building(5, "grey") as again:
        assert again


HOLDER = """
import sys
from pathlib import Path
from gateway.snapshot_files import SnapshotFiles
mapped = SnapshotFiles(Path(sys.argv[1]), "db1").open(int(sys.argv[2]), "black")
assert mapped is not None and mapped.contains(35209900176148)
print("mapped", flush=True)
sys.stdin.readline()  # holds the mapping until told
del mapped
print("released", flush=True)
sys.stdin.readline()
"""


def holder(directory: Path, version: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), str(version)], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, EIR_PURE_PYTHON="1"),
    )
    assert process.stdout is not None and process.stdout.readline() == "mapped\n"
    return process


def test_a_file_is_removed_once_no_process_maps_it(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path, "db1")
    for version in (1, 2, 3):
        write(files, version, "black", [35209900176148, 35209900176149])
    other_db = SnapshotFiles(tmp_path, "db2")
    write(other_db, 1, "black", [1])
    killed, kept = holder(tmp_path, 1), holder(tmp_path, 2)
    ours = files.open(3, "black")
    try:
        assert files.remove_unmapped(below=3) == []  # versions 1 and 2 are mapped elsewhere
        killed.send_signal(signal.SIGKILL)  # a crashed worker: the kernel drops its lock
        killed.wait(10)
        assert files.remove_unmapped(below=3) == [files.path(1, "black")]
        assert kept.stdin is not None and kept.stdout is not None
        kept.stdin.write("\n")
        kept.stdin.flush()
        assert kept.stdout.readline() == "released\n"  # the snapshot dropped, unmapped
        assert files.remove_unmapped(below=3) == [files.path(2, "black")]
        # The current version and another database's files stay.
        assert sorted(p.name for p in tmp_path.glob("*.imeis")) == [
            "lists-db1-3-black.imeis", "lists-db2-1-black.imeis"]
        assert ours is not None and ours.contains(35209900176149)
    finally:
        for process in (killed, kept):
            process.kill()
            process.wait(10)


def test_a_file_removed_between_open_and_lock_is_not_used(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path, "db1")
    write(files, 1, "black", [7])
    path = files.path(1, "black")
    fd = os.open(path, os.O_RDONLY)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # a cleaner holds it ...
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(files.open(1, "black")))
        thread.start()
        thread.join(0.2)
        os.unlink(path)  # ... and removes it while open() waits for the lock
        fcntl.flock(fd, fcntl.LOCK_UN)
        thread.join(10)
        assert result == [None]
    finally:
        os.close(fd)


def test_files_of_before_the_bucket_table_go_once_unmapped(tmp_path: Path) -> None:
    # lists-DB-VERSION-COLOUR.u64 (values only), written by a worker of the release before:
    # removed whatever its version once no process maps it, never while one does.
    import fcntl

    files = SnapshotFiles(tmp_path, "db1")
    mapped, unmapped = (tmp_path / f"lists-db1-{v}-black.u64" for v in (7, 6))
    other_db = tmp_path / "lists-db2-5-black.u64"
    for path in (mapped, unmapped, other_db):
        path.write_bytes(array("Q", [35209900176148]).tobytes())
    fd = os.open(mapped, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # an older worker maps it
        assert files.remove_unmapped(below=1) == [unmapped]
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert files.remove_unmapped(below=1) == [mapped]
    finally:
        os.close(fd)
    assert other_db.exists()
