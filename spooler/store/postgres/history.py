"""A PostgreSQL spool's history: a row per destination and minute, added to by drains
(``spooler.history``) and read by the dashboard's charts.

Minutes are kept on the database's clock, like every time of this store: a minute the
caller gives moves by the difference of the two clocks, rounded to whole minutes, so
hosts whose clocks differ by less than half a minute add to the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ...history import HistoryPoint, minute_of
from .base import PostgresBase
from .sql import NOW

__all__ = ["PostgresHistory"]

#: Whole minutes from the caller's clock to the database's.
_SHIFT = f"(round(({NOW} - %(h)s) / 60) * 60)::bigint"
_COLUMNS = "delivered, retried, dead, requests, latency_sum, latency_max, backlog, oldest_age"
# Several drains add to one minute; the backlog is a snapshot, so the latest one stays.
_ADD = (
    f"INSERT INTO {{s}}.history AS h (minute, destination, {_COLUMNS}) VALUES"
    f" (%(minute)s + {_SHIFT}, %(destination)s, %(delivered)s, %(retried)s, %(dead)s,"
    " %(requests)s, %(latency_sum)s, %(latency_max)s, %(backlog)s, %(oldest_age)s)"
    " ON CONFLICT (minute, destination) DO UPDATE SET"
    " delivered = h.delivered + excluded.delivered, retried = h.retried + excluded.retried,"
    " dead = h.dead + excluded.dead, requests = h.requests + excluded.requests,"
    " latency_sum = h.latency_sum + excluded.latency_sum,"
    " latency_max = greatest(h.latency_max, excluded.latency_max),"
    " oldest_age = CASE WHEN excluded.backlog IS NULL THEN h.oldest_age"
    "                   ELSE excluded.oldest_age END,"
    " backlog = coalesce(excluded.backlog, h.backlog)"
)


class PostgresHistory(PostgresBase):
    """A PostgreSQL spool's history of each destination, a row a minute."""

    def record_history(self, points: Sequence[HistoryPoint], *, now: float, keep: float) -> None:
        """Add drains' minutes (counts add up, a backlog replaces the one kept), and forget
        the minutes that ended more than ``keep`` seconds ago; one transaction.

        Run again after a connection broke at its commit, its counts would be added
        twice: they are statistics for the charts, not events, and nothing more is kept
        to tell whether the commit went through.
        """
        rows = [{**point._asdict(), "h": now} for point in points]

        def run(conn: psycopg.Connection) -> None:
            with self._db.writing(conn):
                if rows:
                    conn.cursor().executemany(self._sql(_ADD), rows)
                conn.execute(
                    self._sql(f"DELETE FROM {{s}}.history WHERE minute < {NOW} - %(keep)s - 60"),
                    {"keep": keep},
                )

        self._db.run(run)

    def history(
        self, *, since: float, now: float, destination: str | None = None
    ) -> list[HistoryPoint]:
        """The minutes from the one ``since`` falls in on, oldest first."""
        params: dict[str, Any] = {"h": now, "since": minute_of(since)}
        condition = f"minute >= %(since)s + {_SHIFT}"
        if destination is not None:
            condition += " AND destination = %(destination)s"
            params["destination"] = destination
        rows = self._read(
            f"SELECT minute - {_SHIFT}, destination, {_COLUMNS} FROM {{s}}.history"
            f" WHERE {condition} ORDER BY minute, destination",
            params,
        )
        return [HistoryPoint(*row) for row in rows]
