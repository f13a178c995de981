"""The store runs on SQLite and PostgreSQL only. MariaDB/MySQL (where Airflow's own metadata may live) is
refused, at migration and at first use, with an error naming the fix, and nothing is created there."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from airflow_provider_twilio_sms.errors import UnsupportedStoreError
from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.api import SmsStore

from conftest import run_airflow


def _table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrating_on_the_connection_airflow_db_migrate_hands_over_is_refused(mysql_url):
    """What ``airflow db migrate`` does with this provider's DB manager on a MySQL metadata database."""
    engine = create_engine(mysql_url)
    try:
        with engine.begin() as conn, pytest.raises(UnsupportedStoreError, match="PostgreSQL or SQLite"):
            migrate.upgrade(conn)
    finally:
        engine.dispose()
    assert _table_names(mysql_url) == set()


@pytest.mark.parametrize("use", [
    lambda url: SmsStore(url),
    lambda url: migrate.upgrade_url(url),
    lambda url: migrate.is_current_url(url),
], ids=["first use", "upgrade_url", "db check"])
def test_first_use_and_the_store_commands_refuse_it(mysql_url, use):
    with pytest.raises(UnsupportedStoreError) as raised:
        use(mysql_url)
    message = str(raised.value)
    assert "does not run on mysql" in message
    assert "postgresql+psycopg2://" in message  # the fix: a store of its own on PostgreSQL (or SQLite)
    assert "airflow twilio-sms db migrate" in message
    assert _table_names(mysql_url) == set()


def test_the_cli_says_why_and_exits_1(mysql_url, airflow_home):
    for command in ("migrate", "check"):
        result = run_airflow(["twilio-sms", "db", command, "--store-url", mysql_url], airflow_home)
        assert result.returncode == 1, result.stdout
        assert "does not run on mysql" in result.stderr
        assert "Traceback" not in result.stderr
    assert _table_names(mysql_url) == set()


def test_airflow_db_migrate_on_a_mysql_metadata_database_creates_nothing_and_goes_on(
        mysql_url, caplog, capfd):
    """Airflow finds the DB manager wherever the provider is installed: on a MySQL metadata database it must
    not stop Airflow's own migration (nor ``db check-migrations``), and it says where the store goes."""
    from sqlalchemy.orm import Session

    from airflow_provider_twilio_sms.store.db_manager import TwilioSmsDBManager

    engine = create_engine(mysql_url)
    try:
        with Session(engine) as session:
            manager = TwilioSmsDBManager(session)
            manager.upgradedb()
            manager.initdb()
            assert manager.check_migration()
    finally:
        engine.dispose()
    assert _table_names(mysql_url) == set()
    logged = caplog.text + "".join(capfd.readouterr())  # Airflow's logging may write straight to the stream
    assert "does not run on mysql" in logged
    assert "postgresql+psycopg2://" in logged
