"""What every part of ``PostgresStore`` shares: its connections, its clock, and the
helpers that run a statement on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import psycopg

from ...records import QueueSelection
from ..shared import check_found
from .connection import Connections

__all__ = ["PostgresBase"]


class PostgresBase:
    """A PostgreSQL spool's connections and clock (``PostgresStore`` sets them up)."""

    _db: Connections
    _clock: Callable[[], float]
    _statements: dict[str, str]

    def _sql(self, template: str) -> str:
        """``template`` with ``{s}`` naming this spool's schema (kept: psycopg prepares
        a statement it sees often, by its text)."""
        statement = self._statements.get(template)
        if statement is None:
            statement = self._statements[template] = template.replace(
                "{s}", self._db.target.quoted_schema
            )
        return statement

    def _rows(
        self, conn: psycopg.Connection, statement: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        return conn.execute(self._sql(statement), params).fetchall()

    def _read(self, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        params.setdefault("h", self._clock())
        return self._db.run(lambda conn: self._rows(conn, statement, params))

    def _run_one(
        self,
        statement: str,
        params: dict[str, Any],
        *,
        require: tuple[QueueSelection, str] | None = None,
        first: str | None = None,
    ) -> int:
        """Run one statement that selects a count, and return it (see ``_run_row``)."""
        # A selected count: psycopg types the values of its rows as Any.
        return cast(int, self._run_row(statement, params, require=require, first=first)[0])

    def _run_row(
        self,
        statement: str,
        params: dict[str, Any],
        *,
        require: tuple[QueueSelection, str] | None = None,
        first: str | None = None,
    ) -> tuple[Any, ...]:
        """Run one statement that selects one row, and return it. With ``require`` (a
        selection, and the table its named ids must be in) the ids are checked first, and
        with ``first`` that statement runs first, in the same transaction; without
        either, the statement is its own transaction."""
        params.setdefault("h", self._clock())

        def run(conn: psycopg.Connection) -> tuple[Any, ...]:
            with self._db.writing(conn, one_statement=require is None and first is None):
                if require:
                    self._require_ids(conn, *require)
                if first:
                    self._rows(conn, first, params)
                return self._rows(conn, statement, params)[0]

        return self._db.run(run)

    def _require_ids(self, conn: psycopg.Connection, selection: QueueSelection, table: str) -> None:
        """Refuse an operation naming ids that are not in ``table``."""
        if not selection.ids:
            return
        found = {
            row[0]
            for row in self._rows(
                conn,
                f"SELECT event_id FROM {{s}}.{table} WHERE event_id = ANY(%(ids)s::text[])",
                {"ids": list(selection.ids)},
            )
        }
        check_found(selection.ids, found, table)
