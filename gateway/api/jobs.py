"""Import jobs of the provisioning API: an uploaded file imported in a worker thread, all rows
or none, with progress (rows, bytes, rate, ETA) readable while it runs.

One import runs at a time (SQLite has one writer; a second waits, ``queued``). The uploaded file
is deleted when its job ends. The last ``keep`` jobs stay queryable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.lists import ListError
from gateway.progress import Progress
from gateway.provisioning import Provisioning

log = logging.getLogger("eir.api")

OnChange = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class ImportJob:
    id: str
    format: str
    actor: str
    file: str  # the name the client gave (or "upload")
    path: Path  # the uploaded copy
    created: float = field(default_factory=time.time)
    state: str = "queued"  # queued | running | succeeded | failed
    finished: float | None = None
    entries: int | None = None
    version: int | None = None
    error: str | None = None
    progress: Progress = field(default_factory=lambda: Progress(0))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "format": self.format,
            "file": self.file,
            "actor": self.actor,
            "created": _iso(self.created),
            "finished": None if self.finished is None else _iso(self.finished),
            "entries": self.entries,
            "version": self.version,
            "error": self.error,
            "progress": self.progress.as_json(),
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class ImportJobs:
    def __init__(
        self, service: Provisioning, on_change: OnChange | None = None, keep: int = 100
    ) -> None:
        self.service = service
        self.on_change = on_change
        self.keep = keep
        self._jobs: OrderedDict[str, ImportJob] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer = asyncio.Lock()

    def submit(self, path: Path, fmt: str, actor: str, file: str) -> ImportJob:
        job = ImportJob(uuid.uuid4().hex, fmt, actor, file, path)
        self._jobs[job.id] = job
        while len(self._jobs) > self.keep:
            oldest = next(iter(self._jobs.values()))
            if oldest.state in ("queued", "running"):
                break
            del self._jobs[oldest.id]
        task = asyncio.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> ImportJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[ImportJob]:
        return list(self._jobs.values())

    async def _run(self, job: ImportJob) -> None:
        try:
            async with self._writer:
                job.state = "running"
                job.progress = Progress(0)
                job.entries = await asyncio.to_thread(
                    self.service.import_file, job.path, job.format, job.actor, job.progress,
                    job.file,
                )
                job.version = await asyncio.to_thread(self.service.version)
                # "succeeded" once the gateway's checks use the new entries.
                if self.on_change is not None:
                    await self.on_change()
                job.state = "succeeded"
        except ListError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a database error: the job says so, nothing was imported
            log.exception("import job %s failed", job.id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()
            with contextlib.suppress(OSError):
                job.path.unlink()
        log.info("import job %s (%s, by %s): %s%s", job.id, job.file, job.actor, job.state,
                 f", {job.entries} entries" if job.state == "succeeded" else f": {job.error}")

    async def close(self) -> None:
        """Wait for the jobs in progress (an import is one transaction: it ends or rolls back)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
