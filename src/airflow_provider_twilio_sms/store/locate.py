"""Finding the store: its SQLAlchemy URL comes from an Airflow connection.

Task code, sensors and triggers may not use Airflow's own engine (Airflow 3 blocks it), so they
always go through the store connection (``[twilio_sms] store_conn_id``, default
``twilio_sms_store_default``). The api-server and the CLI may fall back to Airflow's metadata database,
where ``airflow db migrate`` created the tables.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from airflow_provider_twilio_sms import config
from airflow_provider_twilio_sms.errors import ConnectionConfigError

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore

_URL_SCHEMES = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "sqlite": "sqlite",
}
_stores: dict[str, SmsStore] = {}
_lock = threading.Lock()
_inherited: list[SmsStore] = []  # a forked child's view of its parent's stores: kept, never used


def _after_fork_in_child() -> None:
    """A forked child finds stores of its own (on engines of its own, see :mod:`.engine`)."""
    global _lock
    _lock = threading.Lock()
    _inherited.extend(_stores.values())
    _stores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def url_from_connection(conn) -> str:
    """The SQLAlchemy URL an Airflow connection describes: its ``sqlalchemy_url`` extra, else its parts."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ConnectionConfigError(conn.conn_id, "host", "a sqlite store connection needs the file path",
                                        "Put the database file's absolute path in the host field")
        return f"sqlite:///{path}"
    driver = _URL_SCHEMES.get(conn_type)
    if driver is None:
        raise ConnectionConfigError(
            conn.conn_id, "conn_type", f"type {conn_type!r} is not a database this store knows",
            "Use a postgres or sqlite connection (the store runs on PostgreSQL and SQLite only), or set "
            "the extra sqlalchemy_url",
        )
    from sqlalchemy.engine import URL

    return URL.create(driver, username=conn.login or None, password=conn.password or None,
                      host=conn.host or None, port=conn.port or None,
                      database=conn.schema or None).render_as_string(hide_password=False)


def _metadata_db_url() -> str | None:
    from airflow.configuration import conf

    url = conf.get("database", "sql_alchemy_conn", fallback=None)
    if not url or url.startswith("airflow-db-not-allowed"):
        return None
    return url


def store_url(conn_id: str | None = None, *, allow_metadata_db: bool = False) -> str:
    """The store's URL from its connection; optionally Airflow's metadata DB when there is none."""
    conn_id = conn_id or config.get("store_conn_id") or config.DEFAULTS["store_conn_id"]
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        conn = None
    if conn is not None:
        return url_from_connection(conn)
    if allow_metadata_db and (url := _metadata_db_url()):
        return url
    raise ConnectionConfigError(
        conn_id, "conn_id", "the store connection does not exist",
        f"Create it, e.g. AIRFLOW_CONN_{conn_id.upper()}='{{\"conn_type\": \"generic\", \"extra\": "
        "{\"sqlalchemy_url\": \"postgresql+psycopg2://user:pass@host/db\"}}' (or a sqlite:////path URL), "
        "then run `airflow twilio-sms db migrate` if it is not Airflow's metadata database",
    )


def get_store(
    conn_id: str | None = None, *, url: str | None = None, allow_metadata_db: bool = False
) -> SmsStore:
    """The process-wide :class:`SmsStore` for a connection (or an explicit URL)."""
    from airflow_provider_twilio_sms.store.api import SmsStore

    url = url or store_url(conn_id, allow_metadata_db=allow_metadata_db)
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = SmsStore(url)
        return store
