"""What every part of the store shares: its engine, transactions, and the checks run before a write.

:class:`~airflow_provider_twilio_sms.store.api.SmsStore` is this base with one part per concern: claims and
sends (:mod:`.claims`), rate limits (:mod:`.rate_limits`), webhook events (:mod:`.events`), read queries and
reports (:mod:`.reads`), retention (:mod:`.retention`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from airflow_provider_twilio_sms.errors import ValueTooLongError
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.engine import (
    autocommit,
    autocommits,
    get_engine,
    write_options,
    writer_lock,
)
from airflow_provider_twilio_sms.store.statements import statements

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _string_limits(table) -> tuple[tuple[str, int], ...]:
    return tuple((c.key, length) for c in table.c if (length := getattr(c.type, "length", None)))


def check_fits(values: Mapping[str, Any], limits: Iterable[tuple[str, int]]) -> None:
    """Raise :class:`ValueTooLongError` naming the first value longer than its column keeps.

    Every database then behaves alike: PostgreSQL would refuse the value ("value too long"), SQLite would
    keep it whole; here it is refused before anything is written, in words that say which value it was.
    """
    for name, limit in limits:
        value = values.get(name)
        if value is not None and len(value) > limit:
            raise ValueTooLongError(name, len(value), limit)


class StoreBase:
    """The store's engine and how its parts run statements. Thread-safe; cheap to construct per URL."""

    def __init__(self, url_or_engine: str | Engine):
        self.engine: Engine = get_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.dialect = self.engine.dialect.name
        self._sql = statements(self.dialect)
        self._writer = self.engine.execution_options(**write_options())
        self._writer_lock = writer_lock(self.engine)
        self._autocommit_driver = autocommits(self.engine)

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: ``BEGIN IMMEDIATE``, queued behind this process's writers)."""
        with self._writer_lock, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _write_one(self) -> Iterator[Connection]:
        """A connection for ONE write statement, which commits on its own (atomic as any statement).

        psycopg2: its autocommit flag on the pooled connection (:func:`.engine.autocommit`). SQLite: a
        write transaction.
        """
        if not self._autocommit_driver:
            with self._write() as conn:
                yield conn
            return
        with self.engine.connect() as conn, autocommit(conn.connection.dbapi_connection, conn.invalidate):
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def _insert_ignore(self, conn: Connection, stmt, values: dict) -> bool:
        """Run ``stmt``, an insert from :mod:`.statements` that skips rows violating its unique key;
        True when a row was inserted.
        """
        return conn.execute(stmt, values).rowcount == 1

    @staticmethod
    def _row(result_row) -> dict[str, Any] | None:
        return dict(result_row._mapping) if result_row is not None else None

    def check_ready(self) -> None:
        """Raise unless the store answers (for health checks)."""
        with self._read() as conn:
            conn.execute(select(func.count()).select_from(t.rate_pool))
