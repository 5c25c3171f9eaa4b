"""The spool file's history: a row per destination and minute, added to by drains
(``spooler.history``) and read by the dashboard's charts."""

from __future__ import annotations

from collections.abc import Sequence

from .base import SQLiteBase

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms)
if TYPE_CHECKING:
    from ...history import HistoryPoint

__all__ = ["SQLiteHistory"]

_COLUMNS = (
    "minute, destination, delivered, retried, dead, requests, latency_sum, latency_max,"
    " backlog, oldest_age"
)
# Several drains add to one minute; the backlog is a snapshot, so the latest one stays.
_ADD = (
    f"INSERT INTO history ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (minute, destination) DO UPDATE SET"
    " delivered = delivered + excluded.delivered, retried = retried + excluded.retried,"
    " dead = dead + excluded.dead, requests = requests + excluded.requests,"
    " latency_sum = latency_sum + excluded.latency_sum,"
    " latency_max = max(latency_max, excluded.latency_max),"
    " oldest_age = CASE WHEN excluded.backlog IS NULL THEN oldest_age"
    "                   ELSE excluded.oldest_age END,"
    " backlog = coalesce(excluded.backlog, backlog)"
)


class SQLiteHistory(SQLiteBase):
    """The spool file's history of each destination, a row a minute."""

    def record_history(self, points: Sequence[HistoryPoint], *, now: float, keep: float) -> None:
        """Add drains' minutes (counts add up, a backlog replaces the one kept), and forget
        the minutes that ended more than ``keep`` seconds ago; one transaction."""
        with self._write() as conn:
            conn.executemany(_ADD, points)
            conn.execute("DELETE FROM history WHERE minute < ?", (now - keep - 60,))

    def history(
        self, *, since: float, now: float, destination: str | None = None
    ) -> list[HistoryPoint]:
        """The minutes from the one ``since`` falls in on, oldest first."""
        from ...history import HistoryPoint, minute_of

        condition = "minute >= ?"
        params: list[object] = [minute_of(since)]
        if destination is not None:
            condition += " AND destination = ?"
            params.append(destination)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM history WHERE {condition} ORDER BY minute, destination",
                params,
            ).fetchall()
        return [HistoryPoint(*row) for row in rows]
