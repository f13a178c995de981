"""Reconciliation: after an attempt that may have reached Twilio, find its message there before sending anew.

Twilio's Messages API has no idempotency key, so an attempt that died (or got no answer) after its
request left may have created the message. Before any new POST, the send path reads every message
Twilio created for the same recipient (and sender) since the first attempt, however many there are
(:meth:`.TwilioSmsHook.messages_since` walks the pages until it has passed that moment), and sorts
each one that no other send in the store recorded:

- its body is exactly ours (SHA-256): it is ours; the oldest such is recorded and nothing is sent;
- its body may be ours as Twilio rewrote it (Smart Encoding replaces curly quotes, dashes and the
  like; a Messaging Service with link shortening replaces URLs; Advanced Opt-Out appends a line; an
  account that redacts bodies shows none): nobody can tell here, so nothing is sent and
  :class:`UnknownOutcomeError` names it for a person to decide;
- anything else is another message.

A Content template's text is Twilio's to fill in, so it is never known here: for a template send every
message Twilio created for the recipient since the first attempt, that no other send recorded, may be ours.

Only when no message is ours or may be ours does the send path POST again.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.errors import UnknownOutcomeError
from airflow_provider_twilio_sms.privacy import mask_number
from airflow_provider_twilio_sms.store.claims import body_digest

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.claims import Claim

# How far before the claim Twilio's clock may put the message's creation (clock skew).
RECONCILE_SKEW = timedelta(minutes=5)
NAMED_CANDIDATES = 10  # in the error's text; ``candidate_sids`` has them all
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)


def reconcile_since(claim: Claim) -> datetime:
    """The earliest moment Twilio may have created the claim's message: its first HTTP attempt."""
    return (claim.row.get("http_attempted_at") or claim.row["created_at"]) - RECONCILE_SKEW


def _fold(body: str) -> str:
    """Letters and digits only, URLs left out: what Smart Encoding and link shortening never change."""
    text = unicodedata.normalize("NFKD", _URL.sub(" ", body)).casefold()
    return "".join(char for char in text if char.isalnum())


def may_be_rewritten(ours: str | None, theirs: str | None) -> bool:
    """Whether Twilio may have turned the body we sent, ``ours``, into ``theirs`` (not equal to it).

    Twilio changes punctuation and spaces (Smart Encoding), URLs (link shortening), may add a line
    (Advanced Opt-Out) and may hide the body (redaction); it never changes the words and numbers.
    """
    if not ours:
        return False  # a media-only send: only an exact (empty) body can be it
    if not theirs:
        return True  # the body is not shown
    folded = _fold(ours)
    return folded in _fold(theirs)  # an empty fold (a URL alone) may be anything


@dataclass(frozen=True)
class Reconciliation:
    """What Twilio has for a claim: ``found`` is its message (plain JSON) or None when it has none."""

    found: dict[str, Any] | None
    examined: int


def find_sent_message(hook: TwilioSmsHook, store: SmsStore, claim: Claim, *, to: str, from_: str | None,
                      messaging_service_sid: str | None, body: str | None, page_size: int,
                      on_page: Callable[[], None] | None = None,
                      content_sid: str | None = None) -> Reconciliation:
    """The claim's message at Twilio, or None when Twilio certainly has none.

    Raises :class:`UnknownOutcomeError` naming the messages that may be it (see the module docstring),
    and :class:`.RetryableTwilioError` when Twilio's list cannot be read (nothing is sent either way).
    """
    since = reconcile_since(claim)
    listed = hook.messages_since(since, to=to, from_=from_, page_size=page_size, on_page=on_page)
    candidates = [m for m in listed if _may_be_from_this_send(m, to, messaging_service_sid)]
    if content_sid:  # the text is the template's, filled in by Twilio: nothing to compare it with
        exact, rewritten = [], list(candidates)
    else:
        digest = body_digest(body)
        exact = [m for m in candidates if m.get("body_sha256") == digest]
        rewritten = [m for m in candidates
                     if m.get("body_sha256") != digest and may_be_rewritten(body, m.get("body"))]
    owners = store.message_ids_by_sid([m["sid"] for m in exact + rewritten])

    def not_another_sends(message: dict[str, Any]) -> bool:  # the same text under another key is not ours
        return owners.get(message["sid"], claim.message_id) == claim.message_id

    exact = sorted(filter(not_another_sends, exact), key=_created)
    if exact:
        return Reconciliation(_without_body(exact[0]), len(listed))
    rewritten = sorted(filter(not_another_sends, rewritten), key=_created)
    if rewritten:
        sids = tuple(m["sid"] for m in rewritten)
        named = ", ".join(sids[:NAMED_CANDIDATES]) + (f" and {len(sids) - NAMED_CANDIDATES} more"
                                                       if len(sids) > NAMED_CANDIDATES else "")
        which = "a message" if len(sids) == 1 else f"{len(sids)} messages"
        why = ("whose text cannot be compared with this Content template's (Twilio fills the template in)"
               if content_sid else "whose text is not exactly this message's")
        rewrite = ("" if content_sid else "Twilio may have rewritten it (Smart Encoding, link shortening, an "
                   "opt-out line, redaction). ")
        raise UnknownOutcomeError(
            f"an earlier attempt of this send may have reached Twilio, and Twilio has {which} to "
            f"{mask_number(to)} created since then {why} ({named}); {rewrite}"
            "Not sending again: look it up in Twilio's console. If it is this message, mark this task "
            "successful; if not, send with a new idempotency key", candidate_sids=sids)
    return Reconciliation(None, len(listed))


def _may_be_from_this_send(message: dict[str, Any], to: str, messaging_service_sid: str | None) -> bool:
    if not str(message.get("direction") or "outbound").startswith("outbound") or message.get("to") != to:
        return False
    # Sent through another Messaging Service: not ours. Without one on either side it may be ours.
    return not (messaging_service_sid
                and message.get("messaging_service_sid") not in (None, messaging_service_sid))


def _created(message: dict[str, Any]) -> str:
    return message.get("date_created") or ""


def _without_body(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "body"}
