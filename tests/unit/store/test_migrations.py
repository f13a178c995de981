"""The alembic migrations are the one way the schema is made, and they agree with tables.py."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.tables import metadata

TABLES = {"twilio_sms_message", "twilio_sms_event", "twilio_sms_opt_out", "twilio_sms_rate_pool",
          "twilio_sms_rate_slot", "twilio_sms_reply_wait", "twilio_sms_hitl_request",
          "twilio_sms_event_watch"}


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to:
                    type_ != "table" or name.startswith("twilio_sms_"),
            })
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_matches_the_models(db_url):
    before, after = migrate.upgrade_url(db_url)
    assert (before, after) == (None, migrate.head_revision())
    engine = create_engine(db_url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    assert TABLES | {migrate.VERSION_TABLE} <= names
    assert _diff(db_url) == [], "migrations and store/tables.py disagree: write a new migration"


def test_upgrade_twice_changes_nothing_and_check_says_current(db_url):
    migrate.upgrade_url(db_url)
    assert migrate.upgrade_url(db_url) == (migrate.head_revision(), migrate.head_revision())
    ok, current, head = migrate.is_current_url(db_url)
    assert ok
    assert current == head


def test_check_reports_an_empty_store_as_behind(db_url):
    ok, current, head = migrate.is_current_url(db_url)
    assert not ok
    assert current is None
    assert head == migrate.head_revision()


def test_downgrade_to_base_removes_only_our_tables_and_upgrade_restores_them(db_url):
    from alembic import command

    engine = create_engine(db_url)
    with engine.begin() as conn:  # a table that belongs to someone else must survive
        conn.exec_driver_sql("CREATE TABLE not_ours (id INTEGER PRIMARY KEY)")
    migrate.upgrade_url(db_url)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(connection=conn), "base")
    names = set(inspect(engine).get_table_names())
    assert not (TABLES & names)
    assert "not_ours" in names
    migrate.upgrade_url(db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_the_migration_directory_has_one_head():
    assert migrate.head_revision() == "0013_twilio_sms"
