"""Twilio message statuses and the order in which a message may move through them.

Callbacks arrive late, twice and out of order; a message's current status only ever moves to a
higher rank. Terminal statuses share a rank, so one never replaces another; ``read`` (seen after
``delivered`` on channels that report it) is the only move past a terminal status.
"""

from __future__ import annotations

from collections.abc import Iterable

STATUS_RANK: dict[str, int] = {
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "canceled": 5,
    "partially_delivered": 5,
    "read": 6,
    # inbound direction
    "receiving": 3,
    "received": 5,
}

INBOUND_STATUSES = frozenset({"receiving", "received"})
TERMINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "canceled", "read", "received",
                               "partially_delivered"})
FAILURE_STATUSES = frozenset({"failed", "undelivered", "canceled"})


def reached(status: str | None, wanted: Iterable[str]) -> bool:
    """Whether a message in ``status`` is in one of the ``wanted`` statuses. WhatsApp's ``read`` replaces
    ``delivered`` (a message read was delivered), so it reaches ``delivered`` too.
    """
    status = (status or "").lower()
    wanted = {w.lower() for w in wanted}
    return status in wanted or (status == "read" and "delivered" in wanted)


def status_rank(status: str | None) -> int:
    """Rank of a status; 0 for a status this provider does not know (stored, never moves the state)."""
    return STATUS_RANK.get((status or "").lower(), 0)
