"""Asking Twilio for a delivery status that its callbacks did not bring.

A status callback can be lost (the webhook was down past Twilio's retries, a proxy dropped it, test
credentials never send any). A status sensor then cannot wait on the store alone: once
``fallback_after`` has passed since the send, and for as long as the stored status is not one that
ends the wait, it asks Twilio, at an interval that doubles from ``interval`` up to ``max_interval``.
What Twilio says is stored like a callback (an event whose payload says ``"source": "poll"``), so the
status moves forward in the store for every reader, and a repeated answer is stored once.

Used by :class:`.SmsStatusSensor` in poke and reschedule mode (one message) and by the triggerer's shared
:class:`.StorePoller` (every waiting message of a connection in one batch per round).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.privacy import mask_sid

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.store.api import SmsStore

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 60.0
DEFAULT_MAX_INTERVAL = 900.0
POLL_SOURCE = "poll"


@dataclass
class FallbackSchedule:
    """When to ask Twilio next about one message: at ``due_at``, then after ``interval`` seconds,
    doubling up to ``max_interval``; never while the stored status is one of ``ends``.
    """

    due_at: datetime
    ends: frozenset[str]
    interval: float = DEFAULT_INTERVAL
    max_interval: float = DEFAULT_MAX_INTERVAL
    asks: int = field(default=0)

    def __post_init__(self) -> None:
        if not 0 < self.interval <= self.max_interval:
            raise ValueError(f"the fallback interval must be positive and at most the maximum interval "
                             f"({self.max_interval:g} s), not {self.interval!r}")

    def due(self, status: str | None, now: datetime) -> bool:
        return (status or "").lower() not in self.ends and now >= self.due_at

    def asked(self, now: datetime) -> None:
        self.asks += 1
        self.due_at = now + timedelta(seconds=min(self.interval * 2 ** (self.asks - 1), self.max_interval))


def ask_twilio(hook: TwilioSmsHook, store: SmsStore, conn_id: str, sids: Sequence[str], *,
               created_after: datetime | None = None) -> dict[str, dict[str, Any] | None]:
    """Ask Twilio about ``sids`` (a few requests however many: :meth:`.TwilioSmsHook.fetch_statuses`)
    and store each status it gives as a status event from a poll. Returns what Twilio was asked about
    this time: ``{sid: Twilio's message, or None when it has none}``; the other SIDs wait their turn.
    """
    answers = hook.fetch_statuses(sids, created_after=created_after)
    store_twilio_statuses(hook, store, conn_id, answers)
    log.info("Asked Twilio about %d of %d message(s) whose status callbacks did not come: %s", len(answers),
             len(sids), ", ".join(f"{mask_sid(sid)} {(m or {}).get('status')}" for sid, m in
                                  list(answers.items())[:10]))
    return answers


def store_twilio_statuses(hook: TwilioSmsHook, store: SmsStore, conn_id: str,
                          answers: Mapping[str, dict[str, Any] | None], *, source: str = POLL_SOURCE) -> None:
    """Store the status of each message Twilio gave to ``hook``'s credentials (``{sid: message or None}``)
    as a status event from ``source`` (a poll, a cancel): the message's status moves forward as a callback
    would move it, and a status already stored is stored once.
    """
    senders = store.message_senders(sid for sid, message in answers.items() if message)
    for sid, message in answers.items():
        status = message.get("status") if message else None
        if not message or not status:
            continue
        # Twilio answered these credentials: the answer speaks for every connection holding them (one
        # signer), so it is stored as the sending connection's and moves that message on. A connection
        # with other credentials is a stranger to the message: its answer is kept as its own only.
        sent_by, sender_signer = senders.get(sid, (None, None))
        by = sent_by if sent_by and sender_signer == hook.settings.signer else conn_id
        store.record_status_event(
            account_sid=message.get("account_sid") or hook.settings.account_sid, conn_id=by,
            signer=hook.settings.signer, message_sid=sid, status=status, error_code=message.get("error_code"),
            payload={"source": source, "MessageStatus": status, "ErrorCode": message.get("error_code")})


def finishing_statuses(success: Collection[str], failure: Collection[str]) -> frozenset[str]:
    """The statuses that end a wait; WhatsApp's ``read`` ends a wait for ``delivered``."""
    found = frozenset(s.lower() for s in (*success, *failure))
    return found | {"read"} if "delivered" in found else found
