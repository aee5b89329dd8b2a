"""The stores of ``[state]``: SQLite files in ``state.directory`` (the default), or one
PostgreSQL database (``backend = "postgresql"``, ``dsn``) shared by every worker and host.

Each function opens what the configured backend needs and answers the same way for both; they
block (SQLite, or a wait on the PostgreSQL pool's own loop): from asyncio, call them in a
thread. The PostgreSQL modules are imported only when that backend is configured.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.clone_tracker import CloneTracker
from gateway.lists import ListBackend, ListStore, OperatorLists
from gateway.observation_process import ObservationProcessLog
from gateway.observations import ObservationLog
from gateway.observations import history as sqlite_history
from gateway.tac import ImportSummary, TacDatabase, TacInfo, open_tac_database
from gateway.tac import import_tac_file as sqlite_import_tac

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.pg.database import Database

History = list[tuple[str, float, float, int]]


class StateError(Exception):
    """The PostgreSQL state unreachable or refusing a statement (gateway.pg.database raises
    its subclass); a name for callers that must not import the optional driver."""


def where(config: GatewayConfig) -> str:
    """The state as messages name it: the state directory, or the database (no password)."""
    if config.state.postgresql:
        from gateway.pg.database import redacted

        return redacted(config.state.dsn)
    return str(Path(config.state_dir).resolve())


def open_list_store(config: GatewayConfig) -> ListBackend:
    if config.state.postgresql:
        from gateway.pg.database import Database
        from gateway.pg.lists import PgListStore

        # The state directory is the host's: the snapshot files are shared by its workers.
        shared = Path(config.state_dir) if config.lists.shared_snapshot else None
        return PgListStore(Database(config.state.dsn), shared)
    return ListStore(config.lists.database)


def open_operator_lists(config: GatewayConfig) -> OperatorLists:
    """The store, with each changed ``lists.import_files`` imported, and its snapshot loaded;
    a bad import file raises ListError (start-up names it)."""
    store = open_list_store(config)
    try:
        store.import_files(config.lists.import_files)
        lists = OperatorLists(store, config.lists.import_files)
        lists.snapshot = store.load()
    except BaseException:
        store.close()
        raise
    return lists


def open_tac(config: GatewayConfig) -> TacDatabase:
    """The TAC table in memory, ``tac.file`` imported first when it changed."""
    if not config.state.postgresql:
        return open_tac_database(config.tac.database, config.tac.file)
    from gateway.pg import tac as pg_tac
    from gateway.pg.database import Database

    db = Database(config.state.dsn, max_connections=1)
    try:
        if config.tac.file is not None:
            pg_tac.import_if_changed(db, config.tac.file)
        return pg_tac.load(db)
    finally:
        db.close()


def tac_lookup(config: GatewayConfig, tac: str) -> TacInfo | None:
    """One TAC's record as a gateway would load it (``tac.file`` imported first when it
    changed); PostgreSQL reads that one row."""
    if not config.state.postgresql:
        return open_tac(config).lookup(tac)
    from gateway.pg import tac as pg_tac
    from gateway.pg.database import Database

    db = Database(config.state.dsn, max_connections=1)
    try:
        if config.tac.file is not None:
            pg_tac.import_if_changed(db, config.tac.file)
        return pg_tac.lookup(db, tac)
    finally:
        db.close()


def import_tac(
    config: GatewayConfig, path: str | Path, skip_bad: bool = False, replace: bool = False,
    progress: TextIO | None = None,
) -> ImportSummary:
    if not config.state.postgresql:
        return sqlite_import_tac(config.tac.database, path, skip_bad, replace, progress)
    from gateway.pg import tac as pg_tac
    from gateway.pg.database import Database

    db = Database(config.state.dsn, max_connections=1)
    try:
        return pg_tac.import_tac_file(db, path, skip_bad, replace, progress)
    finally:
        db.close()


def observation_log(config: GatewayConfig) -> ObservationLog:
    obs = config.observations
    if config.state.postgresql:
        from gateway.pg.observations import PgObservationLog, PgObservationProcessLog

        log_class = PgObservationProcessLog if obs.writer == "process" else PgObservationLog
        return log_class(config.state.dsn, obs.queue_size, obs.batch_size, obs.flush_interval)
    if obs.writer == "process":
        return ObservationProcessLog(obs.database, obs.queue_size, obs.batch_size,
                                     obs.flush_interval)
    return ObservationLog(obs.database, obs.queue_size, obs.batch_size, obs.flush_interval)


def database_of(store: ListBackend | None) -> Database | None:
    """The PostgreSQL pool of an open list store, for reads to share (the API's, which would
    otherwise connect afresh each); None with SQLite."""
    if store is None or isinstance(store, ListStore):
        return None
    from gateway.pg.lists import PgListStore

    return store.db if isinstance(store, PgListStore) else None


def history(config: GatewayConfig, imei: str, db: Database | None = None) -> History:
    """(imsi, first_seen, last_seen, count) of an IMEI body in the log as last written;
    through ``db`` (an open pool, :func:`database_of`) when given, else a connection of its
    own for this call."""
    if not config.state.postgresql:
        return sqlite_history(config.observations.database, imei)
    from gateway.pg import observations as pg_observations

    if db is not None:
        return pg_observations.history(db, imei)
    from gateway.pg.database import Database

    own = Database(config.state.dsn, max_connections=1)
    try:
        return pg_observations.history(own, imei)
    finally:
        own.close()


def seed_clone_tracker(config: GatewayConfig, tracker: CloneTracker, now: float | None = None
                       ) -> int:
    """Fill the tracker from the observation log's pairs seen within the window."""
    now = time.time() if now is None else now
    if not config.state.postgresql:
        return tracker.seed(config.observations.database, now)
    from gateway.pg import observations as pg_observations
    from gateway.pg.database import Database

    db = Database(config.state.dsn, max_connections=1)
    try:
        return pg_observations.seed(tracker, db, now)
    finally:
        db.close()
