"""``airflow db migrate`` support: creates and upgrades the twilio_sms_* tables in the metadata DB.

Registered under ``db-managers`` in the provider info. Unlike Airflow's default for DB managers, a
fresh database is never built with ``create_all``: the migrations are the one way in, so that the
first release and every later upgrade run the same, tested steps.

Airflow finds this manager by itself wherever the provider is installed, also where its metadata database
is one the store does not run on (MySQL): there it creates nothing and says, in ``airflow db migrate``'s
log, where to put the store instead; Airflow's own migration goes on.
"""

from __future__ import annotations

from airflow.utils.db_manager import BaseDBManager

from airflow_provider_twilio_sms.errors import UnsupportedStoreError
from airflow_provider_twilio_sms.store import migrate
from airflow_provider_twilio_sms.store.tables import metadata


class TwilioSmsDBManager(BaseDBManager):
    """Manages the ``twilio_sms_*`` tables with their own alembic version table."""

    metadata = metadata
    version_table_name = migrate.VERSION_TABLE
    migration_dir = str(migrate.MIGRATIONS_DIR)
    alembic_file = str(migrate.MIGRATIONS_DIR / "alembic.ini")
    supports_table_dropping = True

    def get_alembic_config(self):
        return migrate.alembic_config(connection=self.session.connection())

    def create_db_from_orm(self):
        self.upgradedb()

    def initdb(self, use_migration_files: bool = False):
        self.upgradedb()

    def _unsupported(self) -> UnsupportedStoreError | None:
        try:
            UnsupportedStoreError.check(self.session.get_bind().dialect.name)
        except UnsupportedStoreError as err:
            return err
        return None

    def check_migration(self) -> bool:
        # Nothing of the store lives in a metadata database it does not run on: nothing to wait for.
        return self._unsupported() is not None or super().check_migration()

    def upgradedb(self, to_revision=None, from_revision=None, show_sql_only=False,
                  use_migration_files: bool = False):
        if (unsupported := self._unsupported()) is not None:
            self.log.error("Not creating the twilio_sms tables in Airflow's metadata database: %s",
                           unsupported)
            return
        self._release_metadata_locks_if_needed()
        before = self.get_current_revision()
        migrate.upgrade(self.session.connection(), to_revision or "head")
        self.session.commit()
        after = self.get_current_revision()
        if before != after:
            self.log.info("Migrated the twilio_sms tables from %s to %s", before or "<empty>", after)

    def downgrade(self, to_revision, from_revision=None, show_sql_only=False):
        from alembic import command

        if self._unsupported() is not None:
            return

        command.downgrade(self.get_alembic_config(), to_revision, sql=show_sql_only)
        self.session.commit()
