"""Content templates and WhatsApp's 24-hour session window, as the stand-in plays them.

Twilio keeps each account's templates in its Content API; the stand-in has a fixed set of test templates,
the same for every account (:data:`TEST_TEMPLATES`):

- ``HX00000000000000000000000000000001`` appointment_reminder, ``Your appointment is on {{1}} at {{2}}.``
  (samples 12/1, 3pm), approved for WhatsApp;
- ``HX00000000000000000000000000000002`` order_shipped, ``Hi {{name}}, your order {{order}} has shipped.``
  (samples there, 12345), approved;
- ``HX00000000000000000000000000000003`` verification_code, ``Your verification code is {{1}}.``, approved;
- ``HX00000000000000000000000000000004`` session_reply, ``Thanks {{1}}, we got your message.``, not approved
  for WhatsApp (within a session window only, as free-form text).

A placeholder left out of ``ContentVariables`` takes the template's sample value, as Twilio does. Twilio's
refusals at create: ``ContentVariables`` without ``ContentSid`` 21654, a SID the account has no template for
21655, ``ContentVariables`` that is not a JSON object of non-empty values 21656.

WhatsApp (Twilio error 63016): a business may send free-form messages (``Body``/``MediaUrl``) to a WhatsApp
user only within 24 hours of that user's last message to the same WhatsApp sender; outside that window only
an approved template goes out. Twilio accepts the request (201, ``queued``) and the message then fails with
63016 (status ``failed``, called back). The stand-in opens a window with each inbound WhatsApp message it
posts (``send_inbound`` / ``POST /_sim/inbound`` from ``whatsapp:+...``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_twilio_sms.simulator.errors import TwilioApiError

SESSION_WINDOW = timedelta(hours=24)
OUTSIDE_WINDOW = 63016
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class Template:
    """One test template: its text with ``{{placeholders}}``, their sample values, WhatsApp approval."""

    name: str
    body: str
    samples: dict[str, str] = field(default_factory=dict)
    whatsapp_approved: bool = True

    def render(self, variables: dict[str, str]) -> str:
        def value(found: re.Match) -> str:
            return variables.get(found.group(1), self.samples.get(found.group(1), ""))

        return _PLACEHOLDER.sub(value, self.body)


def _sid(n: int) -> str:
    return f"HX{n:032x}"


APPOINTMENT_REMINDER, ORDER_SHIPPED, VERIFICATION_CODE, SESSION_REPLY = (_sid(n) for n in range(1, 5))
TEST_TEMPLATES: dict[str, Template] = {
    APPOINTMENT_REMINDER: Template("appointment_reminder", "Your appointment is on {{1}} at {{2}}.",
                                   {"1": "12/1", "2": "3pm"}),
    ORDER_SHIPPED: Template("order_shipped", "Hi {{name}}, your order {{order}} has shipped.",
                            {"name": "there", "order": "12345"}),
    VERIFICATION_CODE: Template("verification_code", "Your verification code is {{1}}.", {"1": "000000"}),
    SESSION_REPLY: Template("session_reply", "Thanks {{1}}, we got your message.", {"1": "there"},
                            whatsapp_approved=False),
}


def check_content(params: dict[str, Any]) -> tuple[Template | None, dict[str, str]]:
    """The template a create names and its variables, or Twilio's refusal (21654, 21655, 21656)."""
    sid, raw = params.get("ContentSid") or None, params.get("ContentVariables")
    if raw not in (None, "") and not sid:
        raise TwilioApiError(21654, "A ContentSid must be specified if ContentVariables are provided in the "
                                    "request.")
    if not sid:
        return None, {}
    template = TEST_TEMPLATES.get(str(sid))
    if template is None:
        raise TwilioApiError(21655, "The ContentSid is Invalid.")
    if raw in (None, ""):
        return template, {}
    try:
        variables = json.loads(str(raw))
    except ValueError:
        variables = None
    if not isinstance(variables, dict) or any(value is None or isinstance(value, (dict, list))
                                              or str(value) == "" for value in variables.values()):
        raise TwilioApiError(21656, "The Content Variables parameter is invalid.")
    return template, {str(key): str(value) for key, value in variables.items()}


class SessionWindows:
    """When each WhatsApp user last wrote to each of our WhatsApp senders. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], datetime] = {}

    def opened(self, ours: str, theirs: str, at: datetime) -> None:
        with self._lock:
            self._last[(ours, theirs)] = at

    def is_open(self, ours: str | None, theirs: str, now: datetime) -> bool:
        with self._lock:
            last = self._last.get((ours or "", theirs))
        return last is not None and now - last < SESSION_WINDOW

    def list(self) -> list[dict[str, str]]:
        with self._lock:
            return [{"sender": ours, "user": theirs, "last_inbound_at": at.isoformat()}
                    for (ours, theirs), at in sorted(self._last.items())]

    def clear(self) -> None:
        with self._lock:
            self._last.clear()
