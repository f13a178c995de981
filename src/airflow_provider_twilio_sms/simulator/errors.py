"""Twilio's error answers: the JSON body its REST API returns with every 4xx/5xx.

{"code": 21211, "message": "...", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}
"""

from __future__ import annotations

from typing import Any

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


class TwilioApiError(Exception):
    """A refusal the stand-in answers with Twilio's error body and HTTP status."""

    def __init__(self, code: int, message: str, status: int = 400, detail: str | None = None):
        super().__init__(message)
        self.code, self.message, self.status, self.detail = code, message, status, detail

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.status, self.detail)


def error_body(code: int, message: str, status: int, detail: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "more_info": MORE_INFO.format(code=code),
                            "status": status}
    if detail:
        body["detail"] = detail
    return body


def unauthorized() -> TwilioApiError:
    return TwilioApiError(20003, "Authenticate", 401, "Your AccountSid or AuthToken was incorrect.")


def not_found(path: str) -> TwilioApiError:
    return TwilioApiError(20404, f"The requested resource {path} was not found", 404)


def method_not_allowed(method: str) -> TwilioApiError:
    return TwilioApiError(20004, f"Method not allowed: {method}", 405)


def invalid_parameter(message: str) -> TwilioApiError:
    """Twilio's generic 400 for a parameter value of the wrong type or format (``Invalid date value``)."""
    return TwilioApiError(20001, message, 400)


# Delivery failures as Twilio reports them on the message (error_code) and in its status callbacks.
DELIVERY_ERRORS = {
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
    30034: "Message from an unregistered number",
    30036: "Validity period expired",
    63016: "Failed to send freeform message because you are outside the allowed window. If you are using "
           "WhatsApp, please use a Message Template.",
}
