"""Which inbound message is the reply a sensor waits for, and what the next task reads of it.

:class:`ReplyCriteria` decides, with the same rules in the sensor and in its trigger. What it hands on
(the sensor's XCom, the trigger's event) names the reply and never holds its text: a body or a
captured OTP code in XCom or in a trigger event would sit in clear in Airflow's database. The next
task calls :func:`read_reply` on that XCom to get the body and the captured groups from the store,
registered with the log masker.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.privacy import mask_number, mask_sid

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.inbound import InboundChannel

_PUNCTUATION = ".!,"


def capture(
    body: str,
    *,
    body_pattern: str | None = None,
    keywords: Collection[str] = (),
    case_sensitive: bool = False,
) -> tuple[list[str | None], dict[str, str | None], str | None] | None:
    """``(groups, named_groups, keyword)`` when ``body`` is a reply of this shape, else None.

    ``body_pattern`` is searched (case-insensitively unless ``case_sensitive``); else the first word
    must be one of ``keywords`` (``keyword`` is then the entry of ``keywords`` it matched, as written
    there, and the only group is the word as the person typed it); with neither, any body matches.
    """
    if body_pattern:
        found = re.search(body_pattern, body, 0 if case_sensitive else re.IGNORECASE)
        return (list(found.groups()), found.groupdict(), None) if found else None
    if keywords:
        first = body.strip().split(maxsplit=1)[0].strip(_PUNCTUATION) if body.strip() else ""
        for keyword in keywords:
            if first == keyword if case_sensitive else first.upper() == keyword.upper():
                return [first], {}, keyword
        return None
    return [], {}, None


# Who a reply comes from and where it arrives: kept in the store (a reply wait), never in trigger kwargs.
PARTIES = ("account_sid", "conn_id", "signer", "from_number", "to_number", "messaging_service_sid")


@dataclass(frozen=True)
class ReplyCriteria:
    """Which inbound message is the awaited reply.

    Only a message verified for ``account_sid`` by connection ``conn_id``, or by another connection of the
    same ``signer`` (see README "What a webhook is trusted for"), from ``from_number``, arriving at
    ``to_number`` or through ``messaging_service_sid``. :meth:`parties` (the numbers) go to the store,
    :meth:`shape` (no personal data) into a trigger's kwargs.
    """

    account_sid: str
    conn_id: str
    signer: str | None = None
    from_number: str | None = None  # who replies (the recipient of our message)
    to_number: str | None = None  # where the reply arrives (our Twilio number)
    messaging_service_sid: str | None = None  # or the Messaging Service our message was sent through
    body_pattern: str | None = None
    keywords: tuple[str, ...] = ()
    case_sensitive: bool = False
    since: datetime | None = None

    def __post_init__(self):
        if not (self.from_number or self.to_number or self.messaging_service_sid):
            raise ValueError("a reply sensor needs in_reply_to, from_number or to_number: "
                             "waiting on every inbound message of every number is not allowed")
        if self.body_pattern:
            try:
                re.compile(self.body_pattern)
            except re.error as err:
                raise ValueError(f"body_pattern is not a valid regular expression: {err}") from None

    def parties(self) -> dict[str, Any]:
        """Who and where (phone numbers included): what a reply wait in the store holds."""
        return {name: getattr(self, name) for name in PARTIES}

    def shape(self) -> dict[str, Any]:
        """What the reply must look like, as JSON without personal data (fit for trigger kwargs)."""
        return {"body_pattern": self.body_pattern, "keywords": list(self.keywords),
                "case_sensitive": self.case_sensitive,
                "since": self.since.isoformat() if self.since else None}

    @classmethod
    def from_parts(cls, parties: Mapping[str, Any], shape: Mapping[str, Any]) -> ReplyCriteria:
        since = shape.get("since")
        return cls(account_sid=str(parties["account_sid"]), conn_id=str(parties["conn_id"]),
                   **{name: parties.get(name) for name in PARTIES[2:]},
                   body_pattern=shape.get("body_pattern"),
                   keywords=tuple(shape.get("keywords") or ()),
                   case_sensitive=bool(shape.get("case_sensitive")),
                   since=datetime.fromisoformat(since) if since else None)

    def channels(self) -> tuple[InboundChannel, ...]:
        """The indexed reads (:mod:`.store.inbound`) that together hold every message :meth:`concerns`
        accepts: those from ``from_number`` (arriving at ``to_number`` or through the service, when given);
        without a sender, those to ``to_number`` and those through ``messaging_service_sid``.
        """
        from airflow_provider_twilio_sms.store.inbound import InboundChannel

        if self.from_number:
            return (InboundChannel(self.account_sid, "from_number", self.from_number, self.to_number,
                                   self.messaging_service_sid),)
        arrivals = (("to_number", self.to_number), ("messaging_service_sid", self.messaging_service_sid))
        return tuple(InboundChannel(self.account_sid, name, value) for name, value in arrivals if value)

    def concerns(self, event: dict[str, Any]) -> bool:
        """The event was verified for our account by our connection (or signer), comes from and goes to
        the right numbers, and is not older than ``since``.
        """
        if event.get("account_sid") != self.account_sid:
            return False
        if event.get("conn_id") != self.conn_id and not (self.signer and event.get("signer") == self.signer):
            return False
        if self.from_number and event.get("from_number") != self.from_number:
            return False
        if self.to_number or self.messaging_service_sid:
            to_ok = bool(self.to_number) and event.get("to_number") == self.to_number
            service_ok = bool(self.messaging_service_sid) and \
                event.get("messaging_service_sid") == self.messaging_service_sid
            if not (to_ok or service_ok):
                return False
        return not (self.since and event["received_at"] < self.since)

    def is_opt_out(self, event: dict[str, Any]) -> bool:
        return self.concerns(event) and (event.get("opt_out_type") or "").upper() == "STOP"

    def match(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """What the sensor hands on when ``event`` is the awaited reply (:func:`read_reply`), else None."""
        if not self.concerns(event) or self.is_opt_out(event):
            return None
        captured = capture(event.get("body") or "", body_pattern=self.body_pattern, keywords=self.keywords,
                           case_sensitive=self.case_sensitive)
        if captured is None:
            return None
        return {
            "message_sid": event["message_sid"],
            "event_id": event["id"],  # the stored row that matched (read_reply reads that one)
            "received_at": event["received_at"].isoformat(),
            "from": mask_number(event.get("from_number")),
            "keyword": captured[2],
            # how to capture the groups again from the stored body: the DAG's own settings, no personal data
            "body_pattern": self.body_pattern,
            "keywords": list(self.keywords),
            "case_sensitive": self.case_sensitive,
        }

    def opt_out_message(self, event: dict[str, Any]) -> str:
        return (f"{mask_number(event.get('from_number'))} opted out (replied STOP, message "
                f"{event['message_sid']}): no reply will come; stopped waiting")


@dataclass(frozen=True)
class Reply:
    """A reply an :class:`~airflow_provider_twilio_sms.sensors.sms.SmsReplySensor` found, from the store."""

    message_sid: str
    received_at: datetime
    from_number: str
    to_number: str
    body: str
    groups: list[str | None] = field(default_factory=list)
    named_groups: dict[str, str | None] = field(default_factory=dict)
    keyword: str | None = None

    def __repr__(self) -> str:  # a repr in a log or a traceback must not show the body or the numbers
        return (f"Reply(message_sid={mask_sid(self.message_sid)}, from={mask_number(self.from_number)}, "
                f"groups={len(self.groups)}, keyword={self.keyword!r})")


def read_reply(found: Mapping[str, Any], *, store_conn_id: str | None = None) -> Reply:
    """The body and captured groups of the reply in ``found`` (an ``SmsReplySensor``'s XCom).

    Reads the message from the store (``store_conn_id``, else the sensor's, else ``[twilio_sms]
    store_conn_id``) and
    captures the groups again with the sensor's pattern or keywords. The body, the groups and the
    sender's number are registered with Airflow's log masker first, so a task that logs them shows
    ``***``. Raises ``LookupError`` when the store no longer has the message.
    """
    from airflow_provider_twilio_sms.store.locate import get_store

    sid = found.get("message_sid") if isinstance(found, Mapping) else None
    if not sid:
        raise ValueError("read_reply needs the XCom of an SmsReplySensor (a mapping with message_sid); "
                         "pass e.g. wait_for_code.output to the task that calls it")
    event_id = found.get("event_id")
    row = get_store(store_conn_id or found.get("store_conn_id")).get_inbound(
        str(sid), int(event_id) if event_id is not None else None)
    if row is None:
        raise LookupError(f"the reply {mask_sid(sid)} is not in the message store: was the store cleaned up, "
                          "or does this task use another store_conn_id than the sensor?")
    body = row.get("body") or ""
    _mask_for_logs(body, row.get("from_number"))
    captured = capture(body, body_pattern=found.get("body_pattern"), keywords=found.get("keywords") or (),
                       case_sensitive=bool(found.get("case_sensitive")))
    groups, named, keyword = captured if captured is not None else ([], {}, None)
    _mask_for_logs(*groups)
    return Reply(message_sid=row["message_sid"], received_at=row["received_at"],
                 from_number=row.get("from_number") or "", to_number=row.get("to_number") or "", body=body,
                 groups=groups, named_groups=named, keyword=keyword)


def _mask_for_logs(*values: str | None) -> None:
    from airflow.sdk.log import mask_secret

    for value in values:
        if value and len(value) >= 4:  # shorter values would mask every "YES" or "no" in every log line
            mask_secret(value)
