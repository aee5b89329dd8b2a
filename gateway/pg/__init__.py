"""``[state] backend = "postgresql"``: operator lists, observations and the TAC database in
PostgreSQL (driver asyncpg), behind the interfaces their SQLite stores satisfy.

* :mod:`gateway.pg.database`: the connection pool, run on an event loop of its own so that the
  blocking interfaces (CLI, provisioning service, reloads in a thread) can call it.
* :mod:`gateway.pg.schema`: the tables, created once per database.
* :mod:`gateway.pg.lists`: the lists store, its change-sequence table and LISTEN/NOTIFY hint.
* :mod:`gateway.pg.observations`, :mod:`gateway.pg.tac`: the observation log, the TAC table.
* :mod:`gateway.pg.migrate`: copies an SQLite state into PostgreSQL.
"""
