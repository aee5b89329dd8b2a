"""The PostgreSQL tables: the SQLite stores' tables, plus the lists' change sequence.

Lists (gateway/lists.py) and their audit log (gateway/audit.py) keep the SQLite layout, so an
export, an import or a migration moves rows as they are. ``list_meta.version`` is bumped by
every write, in its transaction, under the row's lock: versions are gapless and committed in
order (a sequence is neither: a rolled-back ``nextval`` leaves a hole, and a later value can
commit first). ``list_changes`` holds what each version changed, one row per entry written or
removed, or one ``reload`` row for a bulk write; a worker at version V reads the rows above V
and applies them to its snapshot, and loads everything again when it finds a ``reload`` or a
hole (rows older than ``CHANGES_KEPT`` versions are pruned). ``NOTIFY eir_lists`` at commit is
only a wake-up hint: PostgreSQL drops a payload over 8,000 bytes and replays nothing to a
connection that was away.
"""

from __future__ import annotations

SCHEMA_LOCK = 0x45495201  # pg_advisory_xact_lock key taken while creating the schema
CHANNEL = "eir_lists"
CHANGES_KEPT = 100_000  # versions of list_changes kept; a worker further behind reloads

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    colour TEXT NOT NULL,
    kind TEXT NOT NULL,
    first BIGINT NOT NULL,
    last BIGINT NOT NULL,
    imsi TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    source TEXT,
    PRIMARY KEY (kind, colour, first, last, imsi)
);
CREATE INDEX IF NOT EXISTS entries_source ON entries (source) WHERE source IS NOT NULL;
CREATE TABLE IF NOT EXISTS list_meta (
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    version BIGINT NOT NULL
);
INSERT INTO list_meta (id, version) VALUES (true, 0) ON CONFLICT DO NOTHING;
-- This database's own name for the lists snapshot files of gateway/snapshot_files.py: another
-- database (recreated, restored, migrated into) has versions of its own.
DO $$ BEGIN
    -- Added once (a database of an earlier release): ALTER TABLE waits for every transaction
    -- holding list_meta, such as a long import, even when the column is there.
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'list_meta' AND column_name = 'instance') THEN
        ALTER TABLE list_meta ADD COLUMN instance TEXT NOT NULL
            DEFAULT md5(random()::text || clock_timestamp()::text);
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS list_changes (
    version BIGINT NOT NULL,
    seq INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'reload')),
    colour TEXT, kind TEXT, first BIGINT, last BIGINT, imsi TEXT,
    reason TEXT, created DOUBLE PRECISION, updated DOUBLE PRECISION,
    PRIMARY KEY (version, seq)
);
CREATE TABLE IF NOT EXISTS import_stamps (path TEXT PRIMARY KEY, stamp TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor, seq);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, seq);
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
DO $$ BEGIN
    -- Created once: re-creating it at every connection would wait for (and block) any
    -- transaction using the audit log, such as a long import.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'audit_append_only'
                   AND tgrelid = 'audit'::regclass) THEN
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit
            FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS observations (
    imei TEXT NOT NULL,
    imsi TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (imei, imsi)
);
CREATE INDEX IF NOT EXISTS observations_last_seen ON observations (last_seen);
CREATE TABLE IF NOT EXISTS tac (
    tac INTEGER PRIMARY KEY,
    manufacturer TEXT NOT NULL,
    model TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tac_sources (path TEXT PRIMARY KEY, stamp TEXT NOT NULL);
"""
