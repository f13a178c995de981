"""What the migration tests share: SQL run in a transaction of its own, a downgrade, and the schema as the
database reports it; each on an engine of its own, disposed of afterwards (an upgrade or downgrade must not
find a connection of the test's holding a lock)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, inspect, text

from airflow_provider_twilio_sms.store import migrate


@contextmanager
def engine_for(url: str) -> Iterator[Any]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def execute(url: str, sql: str, **params: Any) -> list:
    """Run ``sql`` with ``params`` in one transaction; the rows it returned (none: ``[]``)."""
    with engine_for(url) as engine, engine.begin() as conn:
        result = conn.execute(text(sql), params)
        return result.all() if result.returns_rows else []


def downgrade(url: str, revision: str) -> None:
    """The store at ``url`` downgraded to ``revision`` by alembic, as ``airflow db downgrade`` would."""
    from alembic import command

    with engine_for(url) as engine, engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), revision)


@contextmanager
def inspected(url: str) -> Iterator[Any]:
    """SQLAlchemy's inspector on the database as it is now."""
    with engine_for(url) as engine:
        yield inspect(engine)


def indexes(url: str, *tables: str) -> dict[str, list[str]]:
    """The indexes of ``tables``: name -> indexed columns."""
    with inspected(url) as found:
        return {i["name"]: i["column_names"] for table in tables for i in found.get_indexes(table)}
