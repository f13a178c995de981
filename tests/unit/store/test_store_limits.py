"""Identifiers at Airflow's limits and idempotency keys of any length behave alike on SQLite and PostgreSQL:
stored whole or refused up front, never cut short (PostgreSQL cuts a value CAST to a shorter VARCHAR)."""

from __future__ import annotations

import inspect
import itertools
from hashlib import sha256

import pytest
from sqlalchemy import String, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import Cast, ClauseElement
from sqlalchemy.sql.visitors import iterate

from airflow_provider_twilio_sms.errors import ValueTooLongError
from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.claims import make_scope
from airflow_provider_twilio_sms.store.statements import Statements

ACCOUNT = "AC" + "4" * 32
TEAM = "t" * 250  # the team column's length (Airflow's own team names stop at 50)
MAX = {"dag_id": "d" * 250, "task_id": "k" * 250, "run_id": "r" * 250, "pool": "p" * 256, "team": TEAM,
       "conn_id": "c" * 250, "map_index": 2**31 - 1}


def _claim(store, key, attempt_id="a1", **kw):
    values = dict(scope=make_scope(ACCOUNT, kw.get("team")), idempotency_key=key, account_sid=ACCOUNT,
                  conn_id="twilio_sms_default", to_number="+14155550100", body="hi", attempt_id=attempt_id)
    values.update(kw)
    return store.claim(**values)


def _rows(store):
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t.message))]


def test_every_identifier_at_its_limit_is_stored_whole_and_the_claim_stays_ours(store):
    key = "order/" + "k" * 5000
    attempt = "a" * 100
    claim = _claim(store, key, attempt, lease_seconds=0, attempting=True, **MAX)
    assert claim.outcome == "new"
    [row] = _rows(store)
    assert {name: row[name] for name in MAX} == MAX
    assert row["attempt_id"] == attempt
    assert row["idempotency_key"] is None  # too long to display: not cut
    assert row["idempotency_key_sha256"] == sha256(key.encode()).hexdigest()
    # Another attempt takes the expired claim over (compare-and-set on the full attempt id) and records.
    again = _claim(store, key, "b" * 100, **MAX)
    assert again.outcome == "reconcile"
    assert again.message_id == claim.message_id
    sent = store.record_sent(again, {"sid": "SM" + "1" * 32, "status": "queued", "num_segments": 1})
    assert sent["attempt_id"] == "b" * 100
    assert _claim(store, key, "c" * 100, **MAX).outcome == "sent"
    assert store.get_message(scope=make_scope(ACCOUNT, TEAM), idempotency_key=key)["sid"] == "SM" + "1" * 32


def test_two_long_keys_sharing_their_first_255_characters_are_two_claims(store):
    shared = "x" * 300
    first, second = _claim(store, shared + "a", "a1"), _claim(store, shared + "b", "a2")
    assert (first.outcome, second.outcome) == ("new", "new")
    assert first.message_id != second.message_id
    scope = make_scope(ACCOUNT)
    assert store.get_message(scope=scope, idempotency_key=shared + "a")["id"] == first.message_id
    assert store.get_message(scope=scope, idempotency_key=shared + "b")["id"] == second.message_id
    assert store.get_message(scope=scope, idempotency_key=shared) is None


def test_a_key_that_fits_is_kept_for_display(store):
    _claim(store, "k" * 255, "a1")
    assert _rows(store)[0]["idempotency_key"] == "k" * 255


@pytest.mark.parametrize(("field", "value", "limit"), [
    ("dag_id", "d" * 251, 250), ("task_id", "k" * 251, 250), ("run_id", "r" * 251, 250),
    ("team", "t" * 251, 250), ("pool", "p" * 257, 256), ("conn_id", "c" * 251, 250),
    ("attempt_id", "a" * 101, 100), ("messaging_service_sid", "MG" + "0" * 33, 34),
])
def test_a_value_over_its_limit_is_refused_by_name_before_anything_is_claimed(store, field, value, limit):
    with pytest.raises(ValueTooLongError) as refused:
        _claim(store, "key-1", **{field: value})
    message = str(refused.value)
    assert field in message
    assert str(limit) in message
    assert str(len(value)) in message
    assert value not in message
    assert _rows(store) == []


def test_rate_pools_at_their_longest_are_kept_whole_and_apart(store):
    """Pools that share all but their last character (a team of 250, an Airflow pool of 256 after "pool:")
    are separate pools: nothing is cut short."""
    team = f"team:{TEAM}"
    assert [store.acquire_rate_slot(team, 1, 60).granted for _ in range(2)] == [True, False]
    long_pool = "pool:" + "p" * 256
    assert [store.acquire_rate_slot(long_pool, 1, 60).granted for _ in range(2)] == [True, False]
    assert store.acquire_rate_slot(long_pool[:-1] + "q", 1, 60).granted


def test_a_rate_pool_over_its_limit_is_refused_by_name(store):
    with pytest.raises(ValueTooLongError, match="pool is 301 characters.*300"):
        store.acquire_rate_slot("p" * 301, 1, 60)


# --- no statement casts to a shorter type -----------------------------------------------------------

def _every_statement(sql: Statements):
    """Every statement :class:`Statements` builds: its properties, and its builders with every flag."""
    for name, attr in inspect.getmembers(type(sql)):
        if name.startswith("_") and not name.startswith("_build"):
            continue
        if (
            isinstance(attr, property) or hasattr(attr, "func") and hasattr(attr, "attrname")
        ):  # cached_property
            built = getattr(sql, name)
            if isinstance(built, tuple):  # several statements run in order, or an expression and a number
                yield from (
                    (f"{name}[{i}]", part) for i, part in enumerate(built) if isinstance(part, ClauseElement)
                )
            elif built is not None:
                yield name, built
        elif inspect.isfunction(attr) and name != "__init__":
            flags = [p for p in inspect.signature(attr).parameters.values() if p.name != "self"]
            if all(p.annotation in (bool, "bool") for p in flags) and not name.startswith("_dialect"):
                for combo in itertools.product((False, True), repeat=len(flags)):
                    yield f"{name}{combo}", getattr(sql, name)(*combo)


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_no_statement_casts_a_value_to_a_shorter_string_type(dialect):
    sql = Statements(dialect.name)
    seen = 0
    for name, statement in _every_statement(sql):
        seen += 1
        casts = [node for node in iterate(statement) if isinstance(node, Cast)]
        short = [c for c in casts if isinstance(c.type, String) and c.type.length is not None]
        assert not short, (
            f"{name} CASTs to {[str(c.type) for c in short]}: PostgreSQL cuts such a value silently"
        )
        compiled = str(statement.compile(dialect=dialect))
        assert "AS VARCHAR(" not in compiled.upper(), f"{name}: {compiled}"
    assert seen >= 25  # the walk found the statements (claims, callbacks, opt-outs, rate limits)
