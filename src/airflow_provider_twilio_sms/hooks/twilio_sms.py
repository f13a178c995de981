"""``TwilioSmsHook``: Twilio's Messages API behind a thin hook that validates first and classifies errors.

DAG files import this module on every parse: twilio, phonenumbers and cryptography are imported only
when a client or a number is actually needed. The hook never retries; the send path
(``sending.py``) owns the retry policy, because only it knows whether a second POST is safe.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_twilio_sms import __version__
from airflow_provider_twilio_sms.errors import (
    OptedOutError,
    PermanentTwilioError,
    RetryableTwilioError,
    TwilioApiError,
    UnknownOutcomeError,
    describe_error_code,
)
from airflow_provider_twilio_sms.privacy import mask_number, mask_sid

if TYPE_CHECKING:
    from twilio.rest import Client

    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

USER_AGENT = f"airflow-provider-twilio-sms/{__version__}"
RETRYABLE_CODES = frozenset({20429, 21611, 30001})
DEFAULT_TIMEOUT = 30.0


def _http_client_class():
    """A TwilioHttpClient that remembers the last response's headers per thread (for Retry-After)."""
    from twilio.http.http_client import TwilioHttpClient

    class HeaderKeepingHttpClient(TwilioHttpClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._local = threading.local()

        def request(self, *args, **kwargs):
            self._local.headers = {}
            response = super().request(*args, **kwargs)
            self._local.headers = dict(response.headers or {})
            return response

        @property
        def last_headers(self) -> dict[str, str]:
            return getattr(self._local, "headers", {}) or {}

    return HeaderKeepingHttpClient


def _quiet_twilio_logger() -> logging.Logger:
    """twilio-python logs every request's query string (phone numbers) at INFO: keep it to warnings."""
    logger = logging.getLogger("airflow_provider_twilio_sms.twilio_http")
    logger.setLevel(logging.WARNING)
    return logger


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def message_to_dict(message: Any) -> dict[str, Any]:
    """Twilio's MessageInstance as plain JSON; the body is replaced by its SHA-256."""
    from airflow_provider_twilio_sms.segments import count_segments

    body = getattr(message, "body", None) or ""
    segments, encoding = count_segments(body)
    num_segments = getattr(message, "num_segments", None)
    status = getattr(message, "status", None)
    return {
        "sid": message.sid,
        "account_sid": getattr(message, "account_sid", None),
        "status": str(status) if status is not None else None,
        "to": getattr(message, "to", None),
        "from": getattr(message, "from_", None),
        "messaging_service_sid": getattr(message, "messaging_service_sid", None),
        "num_segments": int(num_segments) if str(num_segments or "").isdigit() else segments,
        "segments": segments,
        "encoding": encoding,
        "date_created": _iso(getattr(message, "date_created", None)),
        "date_sent": _iso(getattr(message, "date_sent", None)),
        "error_code": getattr(message, "error_code", None),
        "error_message": getattr(message, "error_message", None),
        "price": getattr(message, "price", None),
        "price_unit": getattr(message, "price_unit", None),
        "body_sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
    }


class TwilioSmsHook(BaseHook):
    """
    Send and look up SMS through Twilio.

    :param twilio_conn_id: a connection of type ``twilio_sms``.
    :param timeout: seconds to wait for Twilio's answer; an answer that does not come in time is an
        unknown outcome (:class:`UnknownOutcomeError`), never "not sent".
    """

    conn_name_attr = "twilio_conn_id"
    default_conn_name = "twilio_sms_default"
    conn_type = "twilio_sms"
    hook_name = "Twilio SMS"

    def __init__(self, twilio_conn_id: str = default_conn_name, timeout: float = DEFAULT_TIMEOUT, **kwargs):
        super().__init__(**kwargs)
        self.twilio_conn_id = twilio_conn_id
        self.timeout = timeout

    @cached_property
    def settings(self) -> TwilioConnectionSettings:
        from airflow_provider_twilio_sms.connection import load_settings

        return load_settings(self.twilio_conn_id)

    @cached_property
    def client(self) -> Client:
        from twilio.rest import Client

        s = self.settings
        username, password = (s.api_key_sid, s.api_key_secret) if s.api_key_sid else (s.account_sid, s.auth_token)
        base = None if s.api_base_url else (s.region, s.edge)
        client = Client(
            username, password, s.account_sid,
            region=base[0] if base else None, edge=base[1] if base else None,
            http_client=_http_client_class()(timeout=self.timeout, logger=_quiet_twilio_logger()),
            # a non-empty mapping: twilio-python falls back to os.environ for an empty one
            environment={"AIRFLOW_PROVIDER_TWILIO_SMS": "isolated"},
            user_agent_extensions=[USER_AGENT],
        )
        if s.api_base_url:
            client.api.base_url = s.api_base_url
        return client

    def get_conn(self) -> Client:
        return self.client

    # -- operations -----------------------------------------------------------------------------

    def send_message(
        self,
        to: str,
        body: str | None = None,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        media_url: list[str] | None = None,
        status_callback: str | None = None,
        validity_period: int | None = None,
    ) -> dict[str, Any]:
        """Create one message. Validates everything first: a bad request never reaches Twilio."""
        from airflow_provider_twilio_sms.phone import normalize_number
        from airflow_provider_twilio_sms.segments import validate_message

        s = self.settings
        to = normalize_number(to, s.default_region)
        if not (from_ or messaging_service_sid):
            from_, messaging_service_sid = s.from_number, s.messaging_service_sid
        if not (from_ or messaging_service_sid):
            s.require_sender()
        if from_:
            from_ = normalize_number(from_, s.default_region, sender=True)
        validate_message(body, media_url)
        if validity_period is not None and not 1 <= int(validity_period) <= 36000:
            from airflow_provider_twilio_sms.errors import InvalidMessageError

            raise InvalidMessageError(f"validity_period {validity_period} is outside 1..36000 seconds")
        params: dict[str, Any] = {"to": to}
        for name, value in (("body", body), ("from_", from_), ("messaging_service_sid", messaging_service_sid),
                            ("media_url", media_url or None), ("status_callback", status_callback),
                            ("validity_period", validity_period)):
            if value is not None:
                params[name] = value
        message = self._call(lambda: self.client.messages.create(**params), sent=True)
        result = message_to_dict(message)
        self.log.info("Twilio accepted an SMS to %s: SID %s, status %s", mask_number(to), mask_sid(result["sid"]),
                      result["status"])
        return result

    def fetch_message(self, sid: str) -> dict[str, Any]:
        return message_to_dict(self._call(lambda: self.client.messages(sid).fetch(), sent=False))

    def list_messages(self, *, to: str | None = None, from_: str | None = None,
                      date_sent_after: datetime | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Messages matching the filters, newest first, as plain JSON with ``body_sha256`` (no body)."""
        kwargs: dict[str, Any] = {"limit": limit, "page_size": min(limit, 1000)}
        if to:
            kwargs["to"] = to
        if from_:
            kwargs["from_"] = from_
        if date_sent_after is not None:
            kwargs["date_sent_after"] = date_sent_after
        return [message_to_dict(m) for m in self._call(lambda: self.client.messages.list(**kwargs), sent=False)]

    def test_connection(self) -> tuple[bool, str]:
        """Fetch the account: ``(True, "Connected ...")`` or ``(False, reason)``; never raises."""
        try:
            account = self._call(lambda: self.client.api.v2010.accounts(self.settings.account_sid).fetch(),
                                 sent=False)
        except Exception as err:  # noqa: BLE001 - the UI wants a reason, not a traceback
            return False, str(err)
        status = getattr(account, "status", None)
        return True, f"Connected to Twilio account {mask_sid(account.sid)} (status {status})"

    # -- error classification -------------------------------------------------------------------

    def _call(self, operation, *, sent: bool):
        """Run a Twilio call and turn its failures into this provider's typed errors.

        ``sent`` says whether the call creates something (a message): then a timeout or 5xx after the
        request left is an unknown outcome, not a failure.
        """
        import requests
        from twilio.base.exceptions import TwilioRestException

        try:
            return operation()
        except TwilioRestException as err:
            raise self._classify(err, sent) from None
        except (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError) as err:
            raise RetryableTwilioError(f"could not connect to Twilio ({type(err).__name__}); the request never left") from None
        except requests.exceptions.ConnectionError as err:
            if _never_left(err):
                raise RetryableTwilioError(f"could not connect to Twilio ({_reason(err)}); the request never left") from None
            if not sent:
                raise RetryableTwilioError(f"the connection to Twilio broke ({_reason(err)})") from None
            raise UnknownOutcomeError(f"the connection to Twilio broke after the request was sent ({_reason(err)}); "
                                      "the message may exist") from None
        except requests.exceptions.Timeout:
            if not sent:
                raise RetryableTwilioError(f"Twilio did not answer within {self.timeout:g} s") from None
            raise UnknownOutcomeError(f"Twilio did not answer within {self.timeout:g} s after the request was sent; "
                                      "the message may exist") from None

    def _classify(self, err, sent: bool) -> TwilioApiError:
        status, code = int(err.status or 0), err.code
        what = f"{describe_error_code(code)} (HTTP {status})"
        if status == 429 or code in RETRYABLE_CODES:
            headers = {k.lower(): v for k, v in self.client.http_client.last_headers.items()}
            return RetryableTwilioError(what, code=code or 20429, http_status=status,
                                        retry_after=_seconds(headers.get("retry-after")))
        if code == 21610:
            return OptedOutError(what, code=code, http_status=status)
        if status >= 500:
            if sent:
                return UnknownOutcomeError(f"Twilio answered HTTP {status} after the request was sent; "
                                           "the message may exist")  # type: ignore[return-value]
            return RetryableTwilioError(what, code=code, http_status=status)
        return PermanentTwilioError(what, code=code, http_status=status)


def _reason(err: Exception) -> str:
    inner = err.args[0] if err.args else err
    return type(getattr(inner, "reason", inner)).__name__


def _never_left(err: Exception) -> bool:
    """Connection refused, DNS failure: the request was never sent."""
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    seen, inner = set(), err
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        inner = getattr(inner, "reason", None) or (inner.args[0] if getattr(inner, "args", None)
                                                   and isinstance(inner.args[0], BaseException) else None)
    return False


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
