"""Running the store's alembic migrations, on Airflow's metadata DB or on a store of its own.

The tables are only ever created by the migrations (never ``metadata.create_all``), so the first
release and every later upgrade take the same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

VERSION_TABLE = "alembic_version_twilio_sms"
MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the twilio_sms migrations have {len(heads)} heads, expected one: {heads}")
    return heads[0]


def current_revision(connection: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade the store reachable through ``connection`` (the caller commits); refused, with nothing
    created, on a database the store does not run on.
    """
    from alembic import command

    from airflow_provider_twilio_sms.errors import UnsupportedStoreError

    UnsupportedStoreError.check(connection.dialect.name)

    command.upgrade(alembic_config(connection=connection), revision)


def upgrade_url(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the store at ``url``; returns (revision before, revision after)."""
    from dataclasses import replace

    from airflow_provider_twilio_sms.store.engine import StoreTimeouts, create_store_engine

    # On SQLite this also switches the file to WAL mode. No statement timeout: a migration of a big table
    # may take longer than any store call should.
    engine = create_store_engine(url, replace(StoreTimeouts.from_config(), statement_seconds=0))
    try:
        with engine.begin() as conn:
            before = current_revision(conn)
            upgrade(conn, revision)
            after = current_revision(conn)
        return before, after
    finally:
        engine.dispose()


def is_current_url(url: str) -> tuple[bool, str | None, str]:
    """(at head?, current revision, head revision) for the store at ``url``."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from airflow_provider_twilio_sms.errors import UnsupportedStoreError

    UnsupportedStoreError.check(make_url(url).get_backend_name())
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = current_revision(conn)
    finally:
        engine.dispose()
    head = head_revision()
    return current == head, current, head
