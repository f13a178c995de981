"""A forked child (a Celery prefork worker, an executor forking per task) never talks on its parent's
store connections, and leaves them working: both processes would otherwise share one socket."""

from __future__ import annotations

import multiprocessing as mp
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from airflow_provider_twilio_sms.store.locate import get_store

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore

CTX = mp.get_context("fork")


def _backend_pid(store: SmsStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _in_child(inherited: SmsStore, url: str, out) -> None:
    try:
        found = get_store(url=url)
        out.put({
            "inherited": _backend_pid(inherited),
            "found": _backend_pid(found),
            "found_is_parents": found is inherited,
            "granted": inherited.acquire_rate_slot("team:fork", 100, 60).granted,
        })
    except Exception as err:  # noqa: BLE001 - reported to the parent, which fails the test with it
        out.put({"error": f"{type(err).__name__}: {err}"})


@pytest.fixture
def pg_store(pg_url):
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    upgrade_url(pg_url)
    return get_store(url=pg_url)


def test_a_forked_child_opens_its_own_connections_and_the_parents_keep_working(pg_store, pg_url):
    parent_pid = _backend_pid(pg_store)  # now idle in the parent's pool, inherited by the child
    assert pg_store.acquire_rate_slot("team:fork", 100, 60).granted  # the driver path's connection too
    out = CTX.Queue()
    child = CTX.Process(target=_in_child, args=(pg_store, pg_url, out))
    child.start()
    child.join(timeout=60)
    seen = out.get(timeout=5)
    assert "error" not in seen, seen
    assert parent_pid not in (seen["inherited"], seen["found"])
    assert not seen["found_is_parents"]
    assert seen["granted"]
    # The parent's session was neither used nor ended by the child.
    assert _backend_pid(pg_store) == parent_pid
    assert pg_store.acquire_rate_slot("team:fork", 100, 60).granted
