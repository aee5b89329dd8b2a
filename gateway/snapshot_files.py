"""The lists snapshot's sorted exact-IMEI arrays in files every worker of a host maps read-only.

A worker of a host with 100 million listed IMEIs holds 800 MB of ``array('Q')``; sixteen hold
13 GB of the same numbers. With ``lists.shared_snapshot`` the IMEIs of each colour at each store
version are written once to ``DIRECTORY/lists-DB-VERSION-COLOUR.imeis`` (DB tells one database
from another) by the first worker that needs it, and every worker maps it (``mmap``,
read-only), so the page cache holds it once per host. A restarted worker maps the file of its
version at once instead of reading every entry again.

The file, native-endian: the sorted values (unsigned 64-bit), their bucket table's starts
(unsigned 32-bit, gateway/sorted_imeis.py) padded to 8 bytes, then a trailer (:data:`TRAILER`:
magic, count, base, shift, number of starts). The table is built once, by the writer, so a
mapping worker neither builds nor holds its own.

Who maps what is kept by the kernel, not by a table that a crashed worker could leave stale: a
worker holds a shared ``flock`` on each file it maps, for as long as the mapping lives (the
lock belongs to the mapping's own descriptor, released when the snapshot is dropped or the
process dies). Files of older versions that nobody maps any more (an exclusive ``flock``
succeeds) are removed after each full load. Building is serialised per file by an exclusive
``flock`` on ``FILE.lock``; the file is written under a temporary name and renamed into place,
so it is complete wherever it is seen.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import struct
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gateway.sorted_imeis import SortedImeis, bucket_table

log = logging.getLogger("eir.lists")

_DATABASE = re.compile(r"[0-9A-Za-z_.]+")  # no "-": it separates the name's fields
_NAME = re.compile(r"lists-(?P<db>[0-9A-Za-z_.]+)-(?P<version>\d+)-(?P<colour>[a-z]+)\.imeis")
_LEGACY_NAME = re.compile(r"lists-(?P<db>[0-9A-Za-z_.]+)-(?P<version>\d+)-[a-z]+\.u64")
MAGIC = b"EIRIMEI1"
TRAILER = struct.Struct("=8sQQQQ")  # magic, count, base, shift, starts


class SnapshotFiles:
    """The snapshot files of one database in ``directory``."""

    def __init__(self, directory: Path, database: str) -> None:
        if not _DATABASE.fullmatch(database):
            raise ValueError(f"not a file-name-safe database id: {database!r}")
        self.directory = directory
        self.database = database

    def path(self, version: int, colour: str) -> Path:
        return self.directory / f"lists-{self.database}-{version}-{colour}.imeis"

    def open(self, version: int, colour: str) -> SortedImeis | None:
        """The file of ``version`` and ``colour`` mapped, or None where it is not (yet)
        written. A file that is not one of ours, or is cut short, is a ValueError."""
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
            trailer = os.pread(fd, TRAILER.size, size - TRAILER.size) if size >= TRAILER.size \
                else b""
            if len(trailer) != TRAILER.size or trailer[:len(MAGIC)] != MAGIC:
                raise ValueError(f"{path}: not a lists snapshot file (no {MAGIC!r} trailer)")
            _, count, base, shift, starts = TRAILER.unpack(trailer)
            table = _padded(4 * starts)
            if size != 8 * count + table + TRAILER.size or starts < 1:
                raise ValueError(f"{path}: {size} bytes, not {count:,} IMEIs and {starts:,} "
                                 "bucket starts")
            if count == 0:
                return SortedImeis.empty()
            # The mapping keeps its own duplicate of the descriptor, and with it the lock.
            mapping = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        view = memoryview(mapping)
        values = view[:8 * count].cast("Q")
        offsets = view[8 * count:8 * count + 4 * starts].cast("I")
        if offsets[starts - 1] != count:
            raise ValueError(f"{path}: its bucket table does not end at {count:,}")
        return SortedImeis(values, base, shift, offsets, path)

    def newest(self, colour: str, below: int) -> tuple[SortedImeis, int] | None:
        """The newest file of ``colour`` of a version below ``below`` mapped, and its version;
        None where there is none."""
        versions = []
        for path in self.directory.glob(f"lists-{self.database}-*-{colour}.imeis"):
            found = _NAME.fullmatch(path.name)
            if found and found["db"] == self.database and found["colour"] == colour:
                versions.append(int(found["version"]))
        for version in sorted((v for v in versions if v < below), reverse=True):
            mapped = self.open(version, colour)  # None: removed meanwhile by a cleaner
            if mapped is not None:
                return mapped, version
        return None

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
        """A file to write the sorted values into; given its bucket table and trailer, then
        renamed into place when the block ends without an error, removed otherwise."""
        path = self.path(version, colour)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w+b") as out:
                yield out
                out.flush()
                _append_table(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def remove_unmapped(self, below: int) -> list[Path]:
        """Remove this database's files of versions below ``below`` that no process maps,
        and its ``.u64`` files of before the bucket table (values only, which workers of an
        older release may still map during a rolling upgrade), with their lock files; what
        was removed."""
        removed: list[Path] = []
        legacy = self.directory.glob(f"lists-{self.database}-*-*.u64")
        for path in [*self.directory.glob(f"lists-{self.database}-*-*.imeis"), *legacy]:
            found = _NAME.fullmatch(path.name) or _LEGACY_NAME.fullmatch(path.name)
            if found is None or found["db"] != self.database or (
                    path.suffix == ".imeis" and int(found["version"]) >= below):
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


def _padded(size: int) -> int:
    return -(-size // 8) * 8


def _append_table(out: BinaryIO) -> None:
    """Append the bucket table and the trailer of the values written to ``out`` so far."""
    size = out.tell()
    if size % 8:
        raise ValueError(f"{size} bytes is not a whole number of IMEIs")
    count = size // 8
    if count:
        with mmap.mmap(out.fileno(), size, prot=mmap.PROT_READ) as mapping:
            with memoryview(mapping) as view, view.cast("Q") as values:
                base, shift, starts = bucket_table(values)
    else:
        base, shift, starts = 0, 0, array("I", [0])
    table = starts.tobytes()
    out.write(table + bytes(_padded(len(table)) - len(table)))
    out.write(TRAILER.pack(MAGIC, count, base, shift, len(starts)))

