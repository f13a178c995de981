"""Query plans, for the tests that prove the store's polls read ``twilio_sms_event`` through an index: the
statements a piece of code sends, and each one's plan (``EXPLAIN ANALYZE`` on PostgreSQL, ``EXPLAIN QUERY
PLAN`` on SQLite)."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import event


def recorded_selects(engine, run: Callable[[], object]) -> list[tuple[str, object]]:
    """Each distinct (statement, parameters) of the reads ``engine`` received while ``run()`` ran."""
    seen: dict[tuple[str, str], tuple[str, object]] = {}

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen[statement, json.dumps(parameters, default=str)] = (statement, parameters)

    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return list(seen.values())


def plan_nodes(plan: dict):
    """A PostgreSQL plan's nodes, the plan itself first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


def postgresql_plan(raw, statement: str, parameters) -> dict:
    with raw.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        return cursor.fetchone()[0][0]["Plan"]


def event_table_nodes(raw, statement: str, parameters):
    """The nodes of the statement's PostgreSQL plan that read ``twilio_sms_event``, each with a line
    saying which it is (for an assertion's message)."""
    for node in plan_nodes(postgresql_plan(raw, statement, parameters)):
        if node.get("Relation Name") == "twilio_sms_event":
            yield node, f"{node['Node Type']} {node.get('Index Name', '')} in:\n{statement}"


def sqlite_plan(raw, statement: str, parameters) -> list[str]:
    cursor = raw.cursor()
    try:
        return [row[3] for row in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
    finally:
        cursor.close()


def check_plans(store, statements: list[tuple[str, object]],
                check: Callable[[object, str, object], None]) -> None:
    """``check(raw connection, statement, parameters)`` for each statement, on one raw connection of the
    store, rolled back after."""
    raw = store.engine.raw_connection()
    try:
        for statement, parameters in statements:
            check(raw, statement, parameters)
        raw.rollback()
    finally:
        raw.close()
