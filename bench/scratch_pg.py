"""A PostgreSQL database of its own for one benchmark run, dropped afterwards.

    with scratch_database() as url:   # None (and the reason printed) when no server answers
        if url:
            ...

The server is ``TWILIO_SMS_BENCH_PG_URL`` (an admin URL), else the local one on 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text

DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_database() -> Iterator[str | None]:
    admin = create_engine(os.environ.get("TWILIO_SMS_BENCH_PG_URL", DEFAULT_ADMIN_URL),
                          isolation_level="AUTOCOMMIT")
    name = f"twilio_sms_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as err:  # noqa: BLE001 - no server here: say so, and the bench skips PostgreSQL
        print(f"PostgreSQL skipped: {type(err).__name__}: {err}".splitlines()[0])
        admin.dispose()
        yield None
        return
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        from airflow_provider_twilio_sms.store import engine as store_engine

        for engine in store_engine._engines.values():  # the store's pooled connections hold the database
            engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
