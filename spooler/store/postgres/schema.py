"""The PostgreSQL spool's tables, created on first use inside one schema, and the checks
that refuse a schema spooler did not make or cannot read.

The tables mirror the SQLite file's (``store/sqlite/schema.py``); the differences are what a
server shared by many hosts needs. Times are Unix seconds on the database's clock.
``totals`` has ``SHARDS`` rows, not one: each transaction adds its change to the row
of its own backend (``pg_backend_pid() % SHARDS``), so producers do not queue behind
one row lock, and a limit check sums them. ``queue.event_id`` is unique, so an insert
run again after its connection broke at commit stores nothing twice.
"""

from __future__ import annotations

import psycopg

from ...errors import StoreError
from ..postgres_url import Target
from ..shared import no_spool

__all__ = ["SCHEMA_VERSION", "SHARDS", "prepare"]

SCHEMA_VERSION = 3
APPLICATION = "spooler"
SHARDS = 16

# {s} is the schema. A claim writes one row of leases, not one per event
# (store/leases.py); its id is the lease's token, never given out twice. The queue
# churns: vacuum it after 1% of its rows changed, not PostgreSQL's default 20%, so a
# drained backlog leaves few dead rows behind; totals rows are rewritten by every
# transaction, and vacuumed as often.
_LEASES = """
CREATE TABLE {s}.leases (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner       text NOT NULL,
    destination text NOT NULL,
    until       float8 NOT NULL,
    first_id    bigint NOT NULL,
    last_id     bigint NOT NULL,
    ids         bigint[],
    events      int NOT NULL,
    bytes       bigint,
    low_due     float8 NOT NULL,
    low_id      bigint NOT NULL,
    high_due    float8 NOT NULL,
    high_id     bigint NOT NULL
) WITH (autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0);
"""
_TABLES = (
    """
CREATE TABLE {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE {s}.totals (shard int PRIMARY KEY, events bigint NOT NULL, bytes bigint NOT NULL)
    WITH (fillfactor = 20, autovacuum_vacuum_threshold = 1000,
          autovacuum_vacuum_scale_factor = 0);
INSERT INTO {s}.totals SELECT shard, 0, 0 FROM generate_series(0, {shards} - 1) AS shard;
CREATE TABLE {s}.queue (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,
    destination text NOT NULL,
    body        text NOT NULL,
    created_at  float8 NOT NULL,
    queued_at   float8 NOT NULL,
    due_at      float8 NOT NULL,
    attempts    int NOT NULL DEFAULT 0,
    last_status int,
    last_error  text,
    attempt_log jsonb
) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01);
CREATE INDEX queue_due ON {s}.queue (destination, due_at, id);
CREATE TABLE {s}.dead (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,
    destination text NOT NULL,
    body        text NOT NULL,
    created_at  float8 NOT NULL,
    attempts    int NOT NULL,
    reason      text NOT NULL,
    status      int,
    error       text,
    dead_at     float8 NOT NULL,
    attempt_log jsonb
);
CREATE INDEX dead_by_time ON {s}.dead (dead_at);
CREATE TABLE {s}.destination_state (
    destination     text PRIMARY KEY,
    last_success_at float8,
    last_error_at   float8,
    last_status     int,
    last_error      text,
    failures        int NOT NULL DEFAULT 0,
    paused_until    float8,
    url_digest      text
);
CREATE FUNCTION {s}.is_json_object(body text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
        RETURN json_typeof(body::json) = 'object';
    EXCEPTION WHEN others THEN
        RETURN false;
    END $$;
"""
    + _LEASES
)
# The history's minutes (store/postgres/history.py); the dead-letter table is read newest
# first by destination and reason (the dashboard's pages). Added in version 2.
_HISTORY = """
CREATE TABLE {s}.history (
    minute      bigint NOT NULL,
    destination text NOT NULL,
    delivered   bigint NOT NULL DEFAULT 0,
    retried     bigint NOT NULL DEFAULT 0,
    dead        bigint NOT NULL DEFAULT 0,
    requests    bigint NOT NULL DEFAULT 0,
    latency_sum float8 NOT NULL DEFAULT 0,
    latency_max float8 NOT NULL DEFAULT 0,
    backlog     bigint,
    oldest_age  float8,
    PRIMARY KEY (minute, destination)
);
CREATE INDEX dead_by_destination ON {s}.dead (destination, reason, id);
"""
# Schema upgrades, by the version they lead from; each runs in one transaction.
_MIGRATIONS = {
    1: (_HISTORY,),
    # Leases move out of the rows into a table of their own. An event leased the old
    # way is due when its old lease ends, its attempt in flight counted: as it would
    # be after a lease of the new kind ran out. (The half-empty pages were for leases
    # written into the rows.)
    2: (
        _LEASES,
        "UPDATE {s}.queue SET due_at = greatest(due_at, lease_until) WHERE lease_until IS NOT NULL",
        "ALTER TABLE {s}.queue DROP COLUMN lease_owner, DROP COLUMN lease_until,"
        " SET (fillfactor = 100)",
    ),
}


# How many relations the schema holds (0: none, or no such schema), and whether one is a
# ``meta`` table, read together: a spool is created in one transaction, so one look
# never finds its tables without its ``meta``. (Read from the catalog, not with
# to_regclass: that looks the name up in this session's cache, which may still hold a
# "no such table" from before another process's creation committed.)
_CONTENTS = (
    "SELECT count(*), coalesce(bool_or(c.relname = 'meta' AND c.relkind = 'r'), false)"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = %s"
)
# How many of spooler's two columns the schema's ``meta`` table has.
_META_COLUMNS = (
    "SELECT count(*) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c"
    " ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = %s AND c.relname = 'meta' AND a.attname IN ('key', 'value')"
    " AND NOT a.attisdropped"
)


def prepare(conn: psycopg.Connection, target: Target, *, create: bool) -> bool:
    """Check the spool's schema, creating it first if it is missing and ``create``;
    returns whether this created it.

    Every caller, whether it may create the spool or not, reads the same refusal for
    the same schema: one holding other tables is another application's
    (``_foreign``); an empty or missing one is no spool yet (``_missing``)."""
    s = target.quoted_schema
    created = False
    relations, has_meta = _contents(conn, target)
    if not has_meta:
        if relations:
            raise StoreError(_foreign(target))
        if not create:
            raise StoreError(_missing(target, schema_exists=_schema_exists(conn, target)))
        with conn.transaction():
            # Several hosts may start at once: one creates, the others wait and check.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"spooler {s}",))
            relations, has_meta = _contents(conn, target)
            if not has_meta:
                if relations:
                    raise StoreError(_foreign(target))
                _create(conn, target)
                created = True
    if _check(conn, target) < SCHEMA_VERSION:
        _migrate(conn, target)
    return created


def _foreign(target: Target) -> str:
    """The refusal of a schema that holds tables spooler did not make."""
    return (
        f"{target.shown}: schema {target.schema} holds tables that are not a spooler"
        " spool; refusing to touch it (name another with ?schema=)"
    )


def _missing(target: Target, *, schema_exists: bool) -> str:
    """The refusal, by a command that creates nothing, of a schema that holds no spool."""
    if schema_exists:
        return no_spool(target.shown, f"schema {target.schema} holds no tables")
    return no_spool(target.shown, f"the database has no schema {target.schema}")


def _contents(conn: psycopg.Connection, target: Target) -> tuple[int, bool]:
    row = conn.execute(_CONTENTS, (target.schema,)).fetchone()
    assert row is not None  # an aggregate without GROUP BY gives one row
    return int(row[0]), bool(row[1])


def _meta(conn: psycopg.Connection, target: Target) -> dict[str, str]:
    """The ``meta`` table's keys and values; none if it lacks spooler's columns (another
    application's table of that name)."""
    columns = _value(conn, _META_COLUMNS, target.schema)
    if columns != 2:
        return {}
    rows = conn.execute(f"SELECT key::text, value::text FROM {target.quoted_schema}.meta")
    return dict(rows.fetchall())


def _schema_exists(conn: psycopg.Connection, target: Target) -> bool:
    return _value(conn, "SELECT to_regnamespace(%s)", target.quoted_schema) is not None


def _value(conn: psycopg.Connection, query: str, argument: str) -> object:
    """The one value ``query`` (of one ``%s``) selects."""
    row = conn.execute(query, (argument,)).fetchone()
    assert row is not None  # a SELECT without FROM or GROUP BY gives one row
    return row[0]


def _create(conn: psycopg.Connection, target: Target) -> None:
    s = target.quoted_schema
    if not _schema_exists(conn, target):
        # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the right to create
        # schemas even where an administrator made this one for spooler already.
        conn.execute(f"CREATE SCHEMA {s}")
    conn.execute(_TABLES.format(s=s, shards=SHARDS) + _HISTORY.format(s=s))
    conn.execute(
        f"INSERT INTO {s}.meta (key, value) VALUES ('application', %s), ('schema_version', %s)",
        (APPLICATION, str(SCHEMA_VERSION)),
    )


def _check(conn: psycopg.Connection, target: Target) -> int:
    """Refuse a schema that is not a spool this code can use; return its version."""
    meta = _meta(conn, target)
    if meta.get("application") != APPLICATION:
        raise StoreError(_foreign(target))
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{target.shown} has schema version {version}, newer than this spooler "
            f"understands ({SCHEMA_VERSION}); upgrade spooler"
        )
    if version < SCHEMA_VERSION and version not in _MIGRATIONS:
        raise StoreError(f"{target.shown} has unknown schema version {version}")
    return version


def _migrate(conn: psycopg.Connection, target: Target) -> None:
    """Upgrade an older spool in place, one transaction per version step. Several hosts
    may start at once: one upgrades, the others wait and find it done."""
    s = target.quoted_schema
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"spooler {s}",))
            version = int(
                str(_value(conn, f"SELECT value FROM {s}.meta WHERE key = %s", "schema_version"))
            )
            if version >= SCHEMA_VERSION:
                return
            for statement in _MIGRATIONS[version]:
                conn.execute(statement.format(s=s))
            conn.execute(
                f"UPDATE {s}.meta SET value = %s WHERE key = 'schema_version'", (str(version + 1),)
            )
