"""The lists snapshot's sorted exact-IMEI arrays in files every worker of a host maps read-only.

A worker of a host with 100 million listed IMEIs holds 800 MB of ``array('Q')``; sixteen hold
13 GB of the same numbers. With ``lists.shared_snapshot`` the array of each colour at each store
version is written once to ``DIRECTORY/lists-DB-VERSION-COLOUR.u64`` (native-endian unsigned
64-bit values, sorted; DB tells one database from another) by the first worker that needs it,
and every worker maps it (``mmap``, read-only), so the page cache holds it once per host. A
restarted worker maps the file of its version at once instead of reading every entry again.

Who maps what is kept by the kernel, not by a table that a crashed worker could leave stale: a
worker holds a shared ``flock`` on each file it maps, for as long as the mapping lives (the
lock belongs to the mapping's own descriptor, released when the snapshot is dropped or the
process dies). Files of older versions that nobody maps any more (an exclusive ``flock``
succeeds) are removed after each full load. Building is serialised per file by an exclusive
``flock`` on ``FILE.lock``; the file is written under a temporary name and renamed into place,
so it is complete wherever it is seen.

Searching: a ``memoryview`` of the mapping is searched as an ``array('Q')`` would be, after a
bisect of a small in-memory index of every :data:`STRIDE`-th value, so that most of the steps
run on an array (reading a ``memoryview`` item costs twice an array's).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("eir.lists")

STRIDE = 64  # values of the file per entry of the in-memory index
_DATABASE = re.compile(r"[0-9A-Za-z_.]+")  # no "-": it separates the name's fields
_NAME = re.compile(r"lists-(?P<db>[0-9A-Za-z_.]+)-(?P<version>\d+)-(?P<colour>[a-z]+)\.u64")


class MappedImeis:
    """A sorted IMEI file mapped read-only: ``len``, indexing and :meth:`contains`, as the
    snapshot uses an ``array('Q')``. The shared lock on the file lives as long as this does."""

    __slots__ = ("_index", "_view", "path")

    def __init__(self, path: Path, view: memoryview) -> None:
        self.path = path
        self._view = view
        self._index = array("Q", view[::STRIDE])

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, i: int) -> int:
        value: int = self._view[i]
        return value

    def __bool__(self) -> bool:
        return len(self._view) > 0

    def contains(self, value: int) -> bool:
        j = bisect_right(self._index, value)
        if j == 0:
            return False
        low = (j - 1) * STRIDE
        view = self._view
        i = bisect_right(view, value, low, min(low + STRIDE, len(view))) - 1
        return view[i] == value


class SnapshotFiles:
    """The snapshot files of one database in ``directory``."""

    def __init__(self, directory: Path, database: str) -> None:
        if not _DATABASE.fullmatch(database):
            raise ValueError(f"not a file-name-safe database id: {database!r}")
        self.directory = directory
        self.database = database

    def path(self, version: int, colour: str) -> Path:
        return self.directory / f"lists-{self.database}-{version}-{colour}.u64"

    def open(self, version: int, colour: str) -> MappedImeis | array[int] | None:
        """The file of ``version`` and ``colour`` mapped (an empty ``array`` for an empty
        one), or None where it is not (yet) written."""
        path = self.path(version, colour)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            # Removed between the open and the lock (its version was dropped by a cleaner):
            # this descriptor is not the file of that name any more.
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    return None
            except FileNotFoundError:
                return None
            size = os.fstat(fd).st_size
            if size % 8:
                raise ValueError(f"{path}: {size} bytes is not a whole number of IMEIs")
            if size == 0:
                return array("Q")
            # The mapping keeps its own duplicate of the descriptor, and with it the lock.
            mapping = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        return MappedImeis(path, memoryview(mapping).cast("Q"))

    @contextlib.contextmanager
    def building(self, version: int, colour: str, wait: float = 0.05) -> Iterator[bool]:
        """Hold the right to write this file (an exclusive lock on ``FILE.lock``): True, or
        False at once when another process holds it (try :meth:`open` again shortly)."""
        lock = self.path(version, colour).with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writer(self, version: int, colour: str) -> Iterator[BinaryIO]:
        """A file to write the sorted values into; renamed into place when the block ends
        without an error, removed otherwise."""
        path = self.path(version, colour)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def remove_unmapped(self, below: int) -> list[Path]:
        """Remove this database's files of versions below ``below`` that no process maps,
        with their lock files; what was removed."""
        removed: list[Path] = []
        for path in self.directory.glob(f"lists-{self.database}-*-*.u64"):
            found = _NAME.fullmatch(path.name)
            if found is None or found["db"] != self.database or int(found["version"]) >= below:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # mapped by a worker still serving that version
            try:
                os.unlink(path)
                removed.append(path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path.with_suffix(".lock"))
            finally:
                os.close(fd)
        if removed:
            log.info("removed %d lists snapshot file(s) no worker maps", len(removed))
        return removed
