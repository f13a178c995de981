"""Alembic environment for the provider's own tables, with its own version table.

Runs on the connection handed over in ``config.attributes["connection"]`` (Airflow's DB manager and
``airflow twilio-sms db migrate`` both do), else on ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from airflow_provider_twilio_sms.store.migrate import VERSION_TABLE
from airflow_provider_twilio_sms.store.tables import metadata


def _include_object(obj, name, type_, reflected, compare_to):
    # Share a database with Airflow (or anyone) without ever touching their tables.
    if type_ == "table":
        return name.startswith("twilio_sms_")
    return True


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=_include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("twilio_sms migrations need a connection or an alembic sqlalchemy.url option")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
