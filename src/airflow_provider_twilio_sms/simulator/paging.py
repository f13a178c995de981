"""``GET .../Messages.json``: Twilio's filters and its paging.

Filters: ``To``, ``From``, and ``DateSent`` / ``DateSent>`` (on or after) / ``DateSent<`` (on or before),
each a GMT date ``YYYY-MM-DD`` or an ISO 8601 date-time. The stand-in compares whole days, the coarse
reading of Twilio's documentation ("messages sent on and after a specific date"): a client that needs a
finer cut must filter what it gets, as it must with Twilio. A message not sent yet (no ``date_sent``)
matches no ``DateSent`` filter.

Paging: newest first; ``PageSize`` 1-1000 (default 50), ``Page`` (client state), ``PageToken``
(``PA`` + the SID of the last message of the previous page, so that new messages do not shift the next
page; ``PB`` + the first SID of the next page for ``previous_page_uri``); the answer carries
``messages``, ``page``, ``page_size``, ``start``, ``end``, ``uri``, ``first_page_uri``,
``next_page_uri`` and ``previous_page_uri`` (twilio-python follows ``next_page_uri``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from airflow_provider_twilio_sms.simulator.errors import invalid_parameter

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.simulator.messages import StoredMessage

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")


def _day(name: str, value: str) -> date:
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_parameter(f"Invalid date value for {name}: {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.date()


def _int(name: str, value: str | None, default: int, low: int, high: int | None) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid_parameter(f"Invalid {name}: {value!r} is not an integer") from None
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid_parameter(f"Invalid {name}: {value!r}; it must be {bound}")
    return number


def filter_messages(rows: Sequence[StoredMessage], query: dict[str, str]) -> list[StoredMessage]:
    """The rows (newest first) that match the query's filters."""
    kept = list(rows)
    if query.get("To"):
        kept = [m for m in kept if m.resource["to"] == query["To"]]
    if query.get("From"):
        kept = [m for m in kept if m.resource["from"] == query["From"]]
    bounds = {name: _day(name, query[name]) for name in ("DateSent", "DateSent<", "DateSent>")
              if query.get(name)}
    if bounds:
        def sent_day(m: StoredMessage) -> date | None:
            return m.sent_at.astimezone(timezone.utc).date() if m.sent_at else None

        on, after, before = bounds.get("DateSent"), bounds.get("DateSent>"), bounds.get("DateSent<")
        kept = [m for m in kept if (day := sent_day(m)) is not None
                and (on is None or day == on) and (after is None or day >= after)
                and (before is None or day <= before)]
    return kept


def list_page(rows: Sequence[StoredMessage], query: dict[str, str], path: str) -> dict[str, Any]:
    """One page of Twilio's list answer for ``rows`` (an account's messages, newest first)."""
    size = _int("PageSize", query.get("PageSize"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _int("Page", query.get("Page"), 0, 0, None)
    matching = filter_messages(rows, query)
    start = page * size
    token = query.get("PageToken") or ""
    if token[:2] in ("PA", "PB") and len(token) > 2:  # after / before the message with that SID
        for index, message in enumerate(matching):
            if message.resource["sid"] == token[2:]:
                start = index + 1 if token.startswith("PA") else max(0, index - size)
                break
    chunk = matching[start:start + size]
    filters = [(name, query[name]) for name in query if name in FILTERS and query[name]]

    def uri(page_number: int, page_token: str | None) -> str:
        params = [*filters, ("PageSize", str(size)), ("Page", str(page_number))]
        if page_token:
            params.append(("PageToken", page_token))
        return f"{path}?{urlencode(params)}"

    has_next = start + size < len(matching) and bool(chunk)
    previous = None
    if page > 0 and start > 0 and chunk:
        previous = uri(page - 1, f"PB{chunk[0].resource['sid']}")
    return {
        "first_page_uri": uri(0, None),
        "end": start + len(chunk) - 1 if chunk else start,
        "previous_page_uri": previous,
        "messages": [m.resource for m in chunk],
        "uri": uri(page, token or None),
        "page_size": size,
        "start": start,
        "next_page_uri": uri(page + 1, f"PA{chunk[-1].resource['sid']}") if has_next else None,
        "page": page,
    }
