"""Masking of personal data and request values before they reach a log, an exception, XCom or Airflow's
rendered-fields table.

Phone numbers keep their last four digits, SIDs their prefix and last four characters; anything taken
from a request is stripped of control characters so it cannot forge log lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# C0 and C1 controls (NEL U+0085 ends a line in some log viewers), the Unicode line and paragraph
# separators, and the bidirectional overrides and isolates that make a line read differently from its bytes.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def mask_number(number: object) -> str:
    """``+15551234567`` -> ``***4567``, ``whatsapp:+15551234567`` -> ``whatsapp:***4567`` (the channel is
    no secret); anything shorter than five digits is fully hidden.
    """
    if number is None:
        return "<none>"
    text = str(number)
    if text[:9].lower() == "whatsapp:":
        return "whatsapp:" + mask_number(text[9:])
    digits = re.sub(r"\D", "", text)
    if len(digits) < 5:
        return "***"
    return "***" + digits[-4:]


def mask_sid(sid: object) -> str:
    """``SM0123...cdef`` -> ``SM…cdef``: enough to find the message, not enough to guess it."""
    if sid is None:
        return "<none>"
    text = safe_for_log(sid, limit=64)
    if len(text) <= 8:
        return text
    return f"{text[:2]}…{text[-4:]}"


def safe_for_log(value: object, limit: int = 80) -> str:
    """Render a value taken from a request so that it is one short line with no control characters."""
    text = _CONTROL.sub("?", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class MasksRenderedNumbers:
    """For operators and sensors whose template fields hold phone numbers (``number_fields``): each
    rendered number is registered with Airflow's secrets masker as soon as the templates are rendered.

    Right after rendering, Airflow's task runner stores every rendered template field in its
    ``rendered_task_instance_fields`` table (the task's "Rendered Templates" tab), redacted by that masker:
    so the table, and the task log, show ``***`` where the number was. Mapped tasks render through this
    same method (``MappedOperator.render_template_fields`` calls it on the unmapped task).
    """

    number_fields: Sequence[str] = ()

    def _do_render_template_fields(self, parent: Any, template_fields: Any, context: Any, jinja_env: Any,
                                   seen_oids: set[int]) -> None:
        super()._do_render_template_fields(  # type: ignore[misc]
            parent, template_fields, context, jinja_env, seen_oids)
        if parent is self:
            from airflow_provider_twilio_sms.crypto import register_secret

            for name in self.number_fields:
                value = getattr(self, name, None)
                if isinstance(value, str):
                    register_secret(value.strip())
