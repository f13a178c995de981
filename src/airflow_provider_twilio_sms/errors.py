"""Exceptions this provider raises, classified by what the caller should do next.

Messages never contain a phone number in full, a message body, a token or a code.
"""

from __future__ import annotations

# What Twilio's error codes mean, in words a DAG author can act on.
TWILIO_ERROR_MEANINGS: dict[int, str] = {
    20003: "authentication failed: check the Account SID and Auth Token (or API key) of the connection",
    20404: "the resource was not found on this account",
    20429: "too many requests: Twilio is rate limiting this account",
    21211: "the 'To' number is not a valid phone number",
    21212: "the 'From' number is not a valid phone number or short code",
    21408: "this account has no permission to send to the destination's region (check Geo Permissions)",
    21601: "the 'To' number is not a mobile number that can receive SMS",
    21602: "the message body is required",
    21604: "the 'To' number is required",
    21606: "the 'From' number is not a valid, SMS-capable number on this account",
    21610: "the recipient has opted out (replied STOP); do not message them until they reply START",
    21611: "the sender's message queue is full; retry later",
    21612: "Twilio cannot route a message from this 'From' to this 'To' number",
    21614: "the 'To' number is not SMS-capable (for example a landline)",
    21617: "the message body exceeds 1600 characters",
    21620: "a media URL is invalid",
    21623: "more than 10 media URLs",
    21654: "ContentVariables was given without a ContentSid",
    21655: "the ContentSid is not a Content template of this account (deleted, mistyped, another account's)",
    21656: "the ContentVariables are invalid: a JSON object of non-empty string values is needed",
    21910: "'From' and 'To' are on different channels: send WhatsApp from a whatsapp: sender",
    30001: "the queue overflowed; retry later",
    30002: "the account is suspended",
    30003: "the destination handset is unreachable",
    30004: "the message was blocked by the carrier or recipient",
    30005: "the destination number is unknown or no longer exists",
    30006: "the destination is a landline or unreachable carrier",
    30007: "the message was filtered by the carrier as spam",
    30008: "delivery failed for an unknown reason",
    63016: "outside WhatsApp's 24-hour session window a business may send only an approved template: send it "
           "with content_sid (and content_variables), or wait for the customer to write first",
    63031: "a WhatsApp message cannot have the same 'From' and 'To'",
    # Message Scheduling (scheduling.py)
    30409: "this message cannot be canceled: it is no longer scheduled (already sent, or canceled)",
    35111: "SendAt is required when ScheduleType is fixed",
    35114: "SendAt is outside the scheduling window (15 minutes to 35 days ahead, in UTC)",
    35115: "SendAt is outside the scheduling window (15 minutes to 35 days ahead, in UTC)",
    35118: "a Messaging Service is required to schedule a message",
}


def describe_error_code(code: int | None) -> str:
    """``21610 -> "Twilio error 21610 (the recipient has opted out ...)"``."""
    if code is None:
        return "Twilio error (no code)"
    meaning = TWILIO_ERROR_MEANINGS.get(int(code))
    return f"Twilio error {code} ({meaning})" if meaning else f"Twilio error {code}"


class TwilioSmsError(Exception):
    """Base class of every error raised by this provider."""


class ConnectionConfigError(TwilioSmsError, ValueError):
    """A Twilio or store connection, or the ``[twilio_sms]`` config, is set up wrongly."""

    def __init__(self, conn_id: str, field: str, problem: str, fix: str):
        from airflow_provider_twilio_sms.get_provider_info import field_label

        self.conn_id, self.field, self.problem, self.fix = conn_id, field, problem, fix
        label = field_label(field)
        self.where = f"field {field!r}" + (f" ({label})" if label else "")
        super().__init__(f"Connection {conn_id!r}, {self.where}: {problem}. {fix}")


class UnsupportedStoreError(TwilioSmsError, ValueError):
    """The store's database is not one this provider runs on (SQLite or PostgreSQL)."""

    SUPPORTED = ("sqlite", "postgresql")

    def __init__(self, dialect: str):
        self.dialect = dialect
        super().__init__(
            f"the twilio_sms store does not run on {dialect}: it needs SQLite or PostgreSQL (their "
            "INSERT ... ON CONFLICT, RETURNING and the database clock its rate limits use). Put the store in "
            "a PostgreSQL or SQLite database of its own: set the store connection (twilio_sms_store_default, "
            "or [twilio_sms] store_conn_id) to e.g. postgresql+psycopg2://user:pass@host/twilio_sms, then "
            "run `airflow twilio-sms db migrate`"
        )

    @classmethod
    def check(cls, dialect: str) -> None:
        """Raise for a database the store does not run on."""
        if dialect not in cls.SUPPORTED:
            raise cls(dialect)


class InvalidMessageError(TwilioSmsError, ValueError):
    """The message cannot be sent as given (bad number, body too long, too many media URLs).

    Raised before any HTTP request is made.
    """


class ValueTooLongError(InvalidMessageError):
    """A value (an identifier of the send: DAG, task or run id, team, pool, sender...) is longer than the
    store keeps. Raised before anything is claimed or sent, the same on every database.
    """

    def __init__(self, field: str, length: int, limit: int):
        self.field, self.length, self.limit = field, length, limit
        super().__init__(f"{field} is {length} characters long, longer than the {limit} the twilio_sms store "
                         f"keeps; nothing was claimed or sent. Shorten {field} to at most {limit} characters")


class EncryptionError(TwilioSmsError):
    """An encrypted extra could not be decrypted, or a key is missing or malformed."""


class TwilioApiError(TwilioSmsError):
    """Twilio answered with an error."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None,
                 more_info: str | None = None):
        self.code, self.http_status, self.more_info = code, http_status, more_info
        super().__init__(message)


class RetryableTwilioError(TwilioApiError):
    """Transient: the request was refused before Twilio accepted it; sending again is safe later.

    ``retry_after`` is Twilio's ``Retry-After`` in seconds when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class PermanentTwilioError(TwilioApiError):
    """Twilio refused the message for a reason that retrying will not change."""


class MessageNotCancelableError(PermanentTwilioError):
    """Twilio would not cancel the message (30409): it is no longer ``scheduled`` (sent, or canceled)."""


class OptedOutError(PermanentTwilioError):
    """The recipient replied STOP (Twilio error 21610, or an opt-out stored by the webhook)."""


class UnknownOutcomeError(TwilioSmsError):
    """The request may have reached Twilio but no answer came back (timeout, 5xx, reset).

    The message may or may not exist: look it up before sending again, never re-POST blindly.
    ``candidate_sids`` names the messages at Twilio that may be it, when reconciliation found some it
    could not tell apart (a person decides).
    """

    def __init__(self, message: str, *, candidate_sids: tuple[str, ...] = ()):
        self.candidate_sids = tuple(candidate_sids)
        super().__init__(message)
