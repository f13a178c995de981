"""The read API's parameters with their allowed ranges: a value out of range is a 422 naming the parameter
and what it allows, never a 500 from a database or a datetime that cannot hold it.

Every check happens before the store is asked: ids fit a signed 64-bit integer (what PostgreSQL's
BIGINT and SQLite's INTEGER hold), times lie between 1970 and 9999 in UTC (what every dialect stores and
compares, and what Python can convert to UTC), numbers and SIDs have the shape Twilio gives them,
statuses are Twilio's.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Annotated, Any

from fastapi import HTTPException, Path, Query
from pydantic import AfterValidator

from airflow_provider_twilio_sms.store.status import INBOUND_STATUSES, STATUS_RANK
from airflow_provider_twilio_sms.webhook.verification import ADDRESS, MESSAGE_SID

MAX_ID = 2**63 - 1
MAX_LIMIT = 500
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 31, tzinfo=timezone.utc)
MAX_PERIOD = timedelta(days=366)
_PERIOD = re.compile(r"^(\d{1,4})([hd])$")

# Twilio's outbound message statuses (an enum, so the OpenAPI document and a 422 list them). Its members
# come from STATUS_RANK, so that the statuses are written once; mypy only reads literal members.
OutboundStatus = Enum(  # type: ignore[misc]
    "OutboundStatus", {s: s for s in STATUS_RANK if s not in INBOUND_STATUSES}, type=str
)


def invalid(parameter: str, message: str, value: Any = None, where: str = "query") -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, for checks that span parameters."""
    error = {"type": "value_error", "loc": [where, parameter], "msg": message}
    if value is not None:
        error["input"] = str(value)
    return HTTPException(422, [error])


def _time_in_range(value: datetime | None) -> datetime | None:
    """UTC, between :data:`EARLIEST` and :data:`LATEST`; a time without a zone is UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is in year 0 in UTC
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%dT%H:%M:%SZ} and {LATEST:%Y-%m-%dT%H:%M:%SZ} "
                         "(ISO 8601; a time without a zone is UTC)")
    return utc


def _address(value: str | None) -> str | None:
    """A number from the query string: ``?number=+1415...`` arrives as `` 1415...`` (``+`` means space), and
    ``?number=whatsapp:+1415...`` as ``whatsapp: 1415...``.
    """
    if value is None or not value.strip():
        return None
    prefix = "whatsapp:" if value.startswith("whatsapp:") else ""
    rest = value[len(prefix):]
    number = prefix + ("+" + rest.strip() if rest.startswith(" ") else rest.strip())
    if not ADDRESS.fullmatch(number):
        raise ValueError("must be an E.164 number like +14155550123 (write + as %2B), a WhatsApp "
                         "address like whatsapp:+14155550123, a short code of 3 to 8 digits or an "
                         "alphanumeric sender ID of at most 11 characters")
    return number


def _period(value: str) -> str:
    match = _PERIOD.fullmatch(value)
    length = _length(value) if match else None
    if length is None or not timedelta(0) < length <= MAX_PERIOD:
        raise ValueError(f"must be 1 hour to {MAX_PERIOD.days} days, written like 24h or 7d")
    return value


def _length(period: str) -> timedelta:
    amount = int(period[:-1])
    return timedelta(hours=amount) if period.endswith("h") else timedelta(days=amount)


def period_bounds(period: str, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """``[since, until)`` when given, else the last ``period`` up to ``until`` (default now), at most
    :data:`MAX_PERIOD` long. The times are already checked and in UTC.
    """
    until = until or datetime.now(timezone.utc)
    if since is None:
        since = until - _length(period)
    if since >= until:
        raise invalid("since", f"must be before until ({until.isoformat()})", since.isoformat())
    if until - since > MAX_PERIOD:
        raise invalid("since", f"the period from since to until may span at most {MAX_PERIOD.days} days",
                      since.isoformat())
    return since, until


_TIME_RANGE = f"between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} UTC"

# Query() before AfterValidator: lengths are checked first, then the value's meaning. The patterns the
# validators enforce are also given to the OpenAPI document (json_schema_extra), without pydantic's message.
Since = Annotated[datetime | None,
                  Query(description=f"created (outbound) or received (inbound) at or after; {_TIME_RANGE}"),
                  AfterValidator(_time_in_range)]
PeriodStart = Annotated[datetime | None,
                        Query(description=f"start of the period (UTC without a zone); {_TIME_RANGE}"),
                        AfterValidator(_time_in_range)]
PeriodEnd = Annotated[datetime | None,
                      Query(description=f"end of the period, exclusive (default: now); {_TIME_RANGE}"),
                      AfterValidator(_time_in_range)]
Period = Annotated[str, Query(max_length=5, json_schema_extra={"pattern": _PERIOD.pattern},
                              description=f"the last 1h to {MAX_PERIOD.days}d: 24h, 7d... (not with since)"),
                   AfterValidator(_period)]
Number = Annotated[str | None, Query(max_length=32, json_schema_extra={"pattern": ADDRESS.pattern},
                                     description="E.164 number it went to or came from (+ as %2B), a short "
                                                 "code or a sender ID"),
                   AfterValidator(_address)]
BeforeId = Annotated[int | None, Query(ge=1, le=MAX_ID,
                                       description="page: next_before_id of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"rows per page, 1 to {MAX_LIMIT}")]
MessageSid = Annotated[str, Path(pattern=MESSAGE_SID.pattern, max_length=34,
                                 description="Twilio's message SID: SM or MM and 32 hex digits")]
