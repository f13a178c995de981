"""Which inbound message is the reply a sensor waits for: the same rules in the sensor and its trigger."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_provider_twilio_sms.privacy import mask_number


@dataclass(frozen=True)
class ReplyCriteria:
    """What a reply must look like. Plain data, so it travels in trigger kwargs as JSON."""

    from_number: str | None = None  # who replies (the recipient of our message)
    to_number: str | None = None  # where the reply arrives (our Twilio number)
    body_pattern: str | None = None
    keywords: tuple[str, ...] = ()
    case_sensitive: bool = False
    since: datetime | None = None

    def __post_init__(self):
        if not (self.from_number or self.to_number):
            raise ValueError("a reply sensor needs in_reply_to, from_number or to_number: "
                             "waiting on every inbound message of every number is not allowed")
        if self.body_pattern:
            try:
                re.compile(self.body_pattern)
            except re.error as err:
                raise ValueError(f"body_pattern is not a valid regular expression: {err}") from None

    def to_json(self) -> dict[str, Any]:
        return {"from_number": self.from_number, "to_number": self.to_number, "body_pattern": self.body_pattern,
                "keywords": list(self.keywords), "case_sensitive": self.case_sensitive,
                "since": self.since.isoformat() if self.since else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplyCriteria:
        since = data.get("since")
        return cls(from_number=data.get("from_number"), to_number=data.get("to_number"),
                   body_pattern=data.get("body_pattern"), keywords=tuple(data.get("keywords") or ()),
                   case_sensitive=bool(data.get("case_sensitive")),
                   since=datetime.fromisoformat(since) if since else None)

    def concerns(self, event: dict[str, Any]) -> bool:
        """The event comes from and goes to the right numbers, and not before ``since``."""
        if self.from_number and event.get("from_number") != self.from_number:
            return False
        if self.to_number and event.get("to_number") != self.to_number:
            return False
        return not (self.since and event["received_at"] < self.since)

    def is_opt_out(self, event: dict[str, Any]) -> bool:
        return self.concerns(event) and (event.get("opt_out_type") or "").upper() == "STOP"

    def match(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The XCom result when ``event`` is the awaited reply, else None."""
        if not self.concerns(event) or self.is_opt_out(event):
            return None
        body = event.get("body") or ""
        groups: list[str | None] = []
        named: dict[str, str | None] = {}
        if self.body_pattern:
            flags = 0 if self.case_sensitive else re.IGNORECASE
            found = re.search(self.body_pattern, body, flags)
            if not found:
                return None
            groups, named = list(found.groups()), found.groupdict()
        elif self.keywords:
            first = body.strip().split(maxsplit=1)[0] if body.strip() else ""
            wanted = {k if self.case_sensitive else k.upper() for k in self.keywords}
            if (first if self.case_sensitive else first.upper()).strip(".!,") not in wanted:
                return None
            groups = [first.strip(".!,")]
        return {
            "message_sid": event["message_sid"],
            "received_at": event["received_at"].isoformat(),
            "from": mask_number(event.get("from_number")),
            "body": body,
            "groups": groups,
            "named_groups": named,
        }

    def opt_out_message(self, event: dict[str, Any]) -> str:
        return (f"{mask_number(event.get('from_number'))} opted out (replied STOP, message "
                f"{event['message_sid']}): no reply will come; stopped waiting")
