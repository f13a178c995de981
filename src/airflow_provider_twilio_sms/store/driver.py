"""The send path's two store writes, run straight on the DB-API connection.

Every send writes twice: the claim before the request leaves, the recorded SID after Twilio answers.
Through SQLAlchemy's execution machinery (connection and transaction objects, execution context, result
wrapping) each of these writes cost about three times what SQLite takes to run it. Here a statement
from :mod:`.statements` is compiled once per dialect into the driver's SQL and the order of its
parameters, with the column types' own bind and result conversions, and then run on the pooled DB-API
connection: one ``BEGIN IMMEDIATE ... COMMIT`` on SQLite, one autocommitted statement on psycopg2.

Nothing about what is written changes: the SQL is SQLAlchemy's compilation of the same statement, the
values go through the same type conversions (``UtcDateTime``), the pool, its connect-time PRAGMAs and
this process's SQLite writer lock are the same, and DB-API errors come out as SQLAlchemy's exceptions
(``sqlalchemy.exc.OperationalError`` ...), as from every other store method.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.store.deadline import watched

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect, Engine
    from sqlalchemy.sql import ClauseElement


def autocommits(engine: Engine) -> bool:
    """psycopg2 can run one statement as its own transaction (its autocommit flag), without the BEGIN
    and COMMIT round trips.
    """
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"


@contextmanager
def autocommit(dbapi_connection, invalidate: Callable[[], Any]) -> Iterator[None]:
    """psycopg2's autocommit flag on for the block, and off again before the connection goes back to the
    pool (set through SQLAlchemy's AUTOCOMMIT isolation level instead, every return to the pool would
    cost a ``SET default_transaction_isolation`` round trip). A connection on which the flag cannot be
    cleared is broken: ``invalidate()`` keeps it out of the pool.
    """
    dbapi_connection.autocommit = True
    try:
        yield
    finally:
        try:
            dbapi_connection.autocommit = False
        except Exception:  # noqa: BLE001 - a broken connection must not go back to the pool
            invalidate()


def _bind_converter(type_, dialect: Dialect) -> Callable[[Any], Any] | None:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_converter(type_, dialect: Dialect) -> Callable[[Any], Any] | None:
    return type_.dialect_impl(dialect).result_processor(dialect, None)


@dataclass(frozen=True)
class DriverStatement:
    """One statement as the driver runs it: its SQL, and how values become the driver's parameters."""

    sql: str
    # Positional drivers (SQLite's qmark): the bind names in the order their ``?`` appear. Named
    # drivers (psycopg2's pyformat): None, parameters go as a mapping.
    order: tuple[str, ...] | None
    converters: Mapping[str, Callable[[Any], Any]]  # bind name -> the column type's conversion
    defaults: Mapping[str, Any]  # values the statement itself binds (``send_state="sent"``)
    returning: tuple[tuple[str, Callable[[Any], Any] | None], ...]  # RETURNING column names, conversions
    # PostgreSQL: ``PREPARE <name> AS <statement>``, run once per connection before ``sql`` (which then
    # EXECUTEs it): a statement planned once per connection instead of on every call. Where prepared
    # statements do not last from one transaction to the next (a PgBouncer in transaction mode), the
    # writer falls back to ``unprepared`` for good.
    prepare: tuple[str, str] | None = None  # (name, PREPARE ...)
    unprepared: str | None = None

    @classmethod
    def compile(cls, statement: ClauseElement, dialect: Dialect, *,
                before: Sequence[ClauseElement] = (), prepare_as: str | None = None) -> DriverStatement:
        """``statement`` for the driver. With ``before`` (named-parameter drivers only), those statements run
        first in the same query string (``before...; statement``): PostgreSQL runs such a query as one
        transaction (see :attr:`.statements.Statements.decide_fused`), and the rows are ``statement``'s.
        With ``prepare_as`` (PostgreSQL), ``statement`` is a prepared statement of that name.
        """
        from sqlalchemy.sql.compiler import SQLCompiler

        parts = []
        for clause in (*before, statement):
            part = clause.compile(dialect=dialect)
            if not isinstance(part, SQLCompiler):
                raise TypeError(f"a driver statement must be a SQL statement, not {type(clause).__name__}")
            parts.append(part)
        compiled = parts[-1]
        for part in parts:
            if getattr(part, "escaped_bind_names", None) or part.literal_execute_params \
                    or part.post_compile_params:
                raise ValueError("a driver statement needs plain bind parameters (no escaped names, no "
                                 "expanding or literal-execute parameters)")
        if before and compiled.positional:
            raise ValueError("statements run together need a driver with named parameters")
        converters: dict[str, Callable[[Any], Any]] = {}
        defaults: dict[str, Any] = {}
        for part in parts:
            for name, bind in part.binds.items():
                converter = _bind_converter(bind.type, dialect)
                if converter is not None:
                    converters[name] = converter
                if not bind.required:
                    defaults[name] = bind.value
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        columns = compiled.effective_returning or getattr(statement, "selected_columns", None) or ()
        returning = []
        for column in columns:
            if column.key is None:
                raise ValueError("a driver statement's RETURNING columns need names")
            returning.append((column.key, _result_converter(column.type, dialect)))
        strings = [part.string for part in parts]
        prepare = None
        if prepare_as is not None:
            if compiled.positional or dialect.name != "postgresql":
                raise ValueError("prepared driver statements are for PostgreSQL with named parameters")
            names: list[str] = []

            def number(match: re.Match) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            body = re.sub(r"%\((\w+)\)s", number, compiled.string).replace("%%", "%")
            prepare = (prepare_as, f"PREPARE {prepare_as} AS {body}")
            strings[-1] = f"EXECUTE {prepare_as}({', '.join(f'%({name})s' for name in names)})"
        unprepared = "; ".join(part.string for part in parts) if prepare else None
        return cls("; ".join(strings), order, converters, defaults, tuple(returning), prepare, unprepared)

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The driver's parameters for ``values`` (bind name -> value); a missing name raises KeyError."""
        given = {**self.defaults, **values}
        for name, convert in self.converters.items():
            if name in given:
                given[name] = convert(given[name])
        if self.order is None:
            return given
        return tuple([given[name] for name in self.order])

    def row(self, raw: Sequence[Any] | None) -> dict[str, Any] | None:
        """A RETURNING row as ``{column: value}``, converted as the column types convert results."""
        if raw is None:
            return None
        return {name: (convert(value) if convert is not None else value)
                for (name, convert), value in zip(self.returning, raw, strict=True)}


class DriverWriter:
    """Runs one :class:`DriverStatement` as its own transaction on ``engine`` (SQLite, psycopg2).

    SQLite: each thread keeps one connection of its own for these writes (taken from the pool, so with
    the pool's connect-time PRAGMAs, then detached from it): checking a connection out of SQLAlchemy's
    pool and back in costs a write about as much as SQLite's ``COMMIT``. A forked child opens its own.
    PostgreSQL: the pool, whose cost is small beside the round trip.
    Get the one for an engine with :meth:`for_engine`.
    """

    _by_engine: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    _by_engine_lock = threading.Lock()

    def __init__(self, engine: Engine, writer_lock: AbstractContextManager):
        from sqlalchemy.exc import DBAPIError

        self.engine = engine
        self.dialect = engine.dialect
        self._lock = writer_lock
        self._wrap = DBAPIError.instance
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        self._autocommit = autocommits(engine)
        self._own = None if self._autocommit else threading.local()
        self._compiled: dict[tuple[Any, ...], tuple[Any, Any, DriverStatement]] = {}
        self._unprepared = False

    @classmethod
    def for_engine(cls, engine: Engine, writer_lock: AbstractContextManager) -> DriverWriter | None:
        """The engine's writer; None where the driver path does not apply (other databases and drivers)."""
        if not (engine.dialect.name == "sqlite" or autocommits(engine)):
            return None
        with cls._by_engine_lock:
            found = cls._by_engine.get(engine)
            if found is None:
                found = cls._by_engine[engine] = cls(engine, writer_lock)
            return found

    def prepare(self, statement: ClauseElement, before: tuple[ClauseElement, ...] = (),
                prepare_as: str | None = None) -> DriverStatement:
        """``statement`` (after ``before``) compiled for this engine's dialect (once: statements are built
        once, see :mod:`.statements`; the statement objects are kept so that their ids cannot be reused).
        """
        key = (id(statement), *map(id, before), prepare_as)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = (statement, before, DriverStatement.compile(
                statement, self.dialect, before=before, prepare_as=prepare_as))
        return found[2]

    def execute(self, statement: ClauseElement, values: Mapping[str, Any], *,
                before: tuple[ClauseElement, ...] = (),
                prepare_as: str | None = None) -> tuple[dict[str, Any] | None, int]:
        """Run ``statement`` (after ``before``, prepared as ``prepare_as``: see
        :meth:`DriverStatement.compile`) with ``values`` and commit: (its first RETURNING or result row, or
        None; its rowcount).
        """
        prepared = self.prepare(statement, before, prepare_as)
        parameters = prepared.parameters(values)
        with self._lock:
            connection = self._checkout()
            try:
                # A caller's deadline watches pooled connections from the pool's checkout; this writer's own
                # SQLite connections skip the pool, so they are watched here.
                own = self._own is not None
                with watched(connection.dbapi_connection, "sqlite") if own else nullcontext():
                    raw, rowcount = self._run(connection, prepared, parameters)
            except self._dbapi_error as err:
                self._discard(connection, err)
                # Never the parameters in the message: they hold phone numbers and bodies.
                raise self._wrap(prepared.sql, parameters, err, self._dbapi_error, hide_parameters=True,
                                 dialect=self.dialect) from err
            except BaseException as err:
                self._discard(connection, err)
                raise
            self._checkin(connection)
        return prepared.row(raw), rowcount

    def _checkout(self):
        if self._own is None:
            return self.engine.raw_connection()
        held = getattr(self._own, "held", None)
        if held is None or held[0] != os.getpid():  # none yet, or the parent's (never use it in a child)
            connection = self.engine.raw_connection()
            connection.detach()
            held = self._own.held = (os.getpid(), connection)
        return held[1]

    def _checkin(self, connection) -> None:
        if self._own is None:
            connection.close()  # back to the pool

    def _discard(self, connection, err: BaseException) -> None:
        """After a failed write: SQLite's own connection is replaced by a fresh one next time; a pooled
        one goes back to the pool (which rolls back), or is invalidated when the server dropped it.
        """
        if self._own is not None:
            self._own.held = None
            connection.close()
            return
        if connection.is_valid and isinstance(err, self._dbapi_error) \
                and self.dialect.is_disconnect(err, connection.dbapi_connection, None):
            connection.invalidate(err)
        connection.close()

    def _run_prepared(self, connection, cursor, prepared: DriverStatement, parameters) -> None:
        """``prepared``'s EXECUTE, preparing it first on a connection that has not; its plain SQL where
        prepared statements turned out not to last (then for good).
        """
        if self._unprepared:
            cursor.execute(prepared.unprepared, parameters)
            return
        if prepared.prepare is None:
            raise ValueError("_run_prepared needs a statement compiled with prepare_as")
        name, prepare = prepared.prepare
        if name not in connection.info:  # the pool keeps ``info`` with its connection
            try:
                cursor.execute(prepare)
            except self._dbapi_error as err:
                if _pg_error(err) != "42P05":  # duplicate_prepared_statement: there already
                    raise
            connection.info[name] = True
        try:
            cursor.execute(prepared.sql, parameters)
        except self._dbapi_error as err:
            if _pg_error(err) != "26000":  # invalid_sql_statement_name: gone (nothing ran, nothing committed)
                raise
            self._unprepared = True
            cursor.execute(prepared.unprepared, parameters)

    def _run(self, connection, prepared: DriverStatement, parameters) -> tuple[Sequence[Any] | None, int]:
        dbapi_connection = connection.dbapi_connection
        if self._autocommit:
            with autocommit(dbapi_connection, connection.invalidate), dbapi_connection.cursor() as cursor:
                if prepared.prepare is not None:
                    self._run_prepared(connection, cursor, prepared, parameters)
                else:
                    cursor.execute(prepared.sql, parameters)
                return _first(cursor, prepared), cursor.rowcount
        # SQLite, in the connection's manual mode (engine.py): the write lock is taken up front.
        dbapi_connection.execute("BEGIN IMMEDIATE")
        try:
            cursor = dbapi_connection.execute(prepared.sql, parameters)
            raw = _first(cursor, prepared)
            rowcount = cursor.rowcount
            cursor.close()
            dbapi_connection.execute("COMMIT")
        except BaseException:
            if dbapi_connection.in_transaction:
                dbapi_connection.execute("ROLLBACK")
            raise
        return raw, rowcount


def _pg_error(err: BaseException) -> str | None:
    return getattr(err, "pgcode", None)


def _first(cursor, prepared: DriverStatement) -> Sequence[Any] | None:
    """The first RETURNING row. Every row is read: SQLite counts ``rowcount`` only once the statement
    has run to its end.
    """
    if not prepared.returning:
        return None
    rows = cursor.fetchall()
    return rows[0] if rows else None
