"""``TwilioSmsHook``: Twilio's Messages API behind a thin hook that validates first and classifies errors.

DAG files import this module on every parse: twilio, phonenumbers and cryptography are imported only
when a client or a number is actually needed. The hook never retries; the send path
(``sending.py``) owns the retry policy, because only it knows whether a second POST is safe.

How a failure is reported (the caller decides what to do next):

========================================================  =========================================
What happened                                             Raised
========================================================  =========================================
invalid number, body over 1600 characters, more than      :class:`InvalidMessageError`, before any
10 media URLs, malformed sender, no sender configured     request (:class:`ConnectionConfigError`
                                                          for the missing sender)
HTTP 429 / Twilio 20429, 21611 (sender queue full),       :class:`RetryableTwilioError`, with
30001 (queue overflow)                                    ``retry_after`` from ``Retry-After``
21610 (recipient replied STOP)                            :class:`OptedOutError`
any other 4xx (21211, 21212, 21408, 21606, 21612,         :class:`PermanentTwilioError`
21614, 20003, 20404, ...)
5xx, read timeout, connection reset or broken answer      creating a message:
after the request was sent                                :class:`UnknownOutcomeError` (the message
                                                          may exist: reconcile, never re-POST);
                                                          reading: :class:`RetryableTwilioError`
connection refused, DNS failure, connect timeout, proxy   :class:`RetryableTwilioError` (the request
or TLS certificate failure (the request never left)       never left)
========================================================  =========================================
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

from airflow.sdk import BaseHook

from airflow_provider_twilio_sms import __version__
from airflow_provider_twilio_sms.errors import (
    ConnectionConfigError,
    InvalidMessageError,
    MessageNotCancelableError,
    OptedOutError,
    PermanentTwilioError,
    RetryableTwilioError,
    TwilioSmsError,
    UnknownOutcomeError,
    describe_error_code,
)
from airflow_provider_twilio_sms.privacy import mask_number, mask_sid

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from twilio.rest import Client

    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

USER_AGENT = f"airflow-provider-twilio-sms/{__version__}"
DEFAULT_TIMEOUT = 30.0
DEFAULT_API_URL = "https://api.twilio.com"
LIST_PAGE_SIZE = 1000  # the largest page Twilio's list gives
# Twilio error codes that mean "not now": the message was refused before it was accepted.
RETRYABLE_CODES = frozenset({20429, 21611, 30001})
OPTED_OUT_CODE = 21610
NOT_CANCELABLE_CODE = 30409  # "This message cannot be canceled": it is no longer scheduled
MAX_VALIDITY_PERIOD = 36000
_MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")
_MAY_EXIST = "the message may exist: look it up before sending again"
# Marks the client's environment as ours: an empty mapping would make twilio-python read os.environ.
ISOLATED_ENVIRONMENT = {"AIRFLOW_PROVIDER_TWILIO_SMS": "isolated"}

log = logging.getLogger(__name__)


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if value else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def message_to_dict(message: Any, *, segments: tuple[int, str | None] | None = None,
                    include_body_sha256: bool = False, include_body: bool = False) -> dict[str, Any]:
    """Twilio's ``MessageInstance`` as plain JSON (for XCom and the store); never the body unless asked.

    ``segments`` is ``(count, encoding)`` of the message we sent; else it is computed from the body Twilio
    returned (one unit and no encoding for WhatsApp: see :func:`.message_units`). ``num_segments`` is
    Twilio's own count (ours when Twilio gives none).
    """
    from airflow_provider_twilio_sms.segments import message_units

    body = getattr(message, "body", None) or ""
    count, encoding = segments or message_units(getattr(message, "to", None), body)
    status = getattr(message, "status", None)
    result: dict[str, Any] = {
        "sid": getattr(message, "sid", None),
        "account_sid": getattr(message, "account_sid", None),
        "messaging_service_sid": getattr(message, "messaging_service_sid", None),
        "status": str(status) if status is not None else None,
        "direction": getattr(message, "direction", None),
        "to": getattr(message, "to", None),
        "from": getattr(message, "from_", None),
        "num_segments": _int_or_none(getattr(message, "num_segments", None)) or count,
        "segments": count,
        "encoding": encoding,
        "num_media": _int_or_none(getattr(message, "num_media", None)),
        "date_created": _iso(getattr(message, "date_created", None)),
        "date_sent": _iso(getattr(message, "date_sent", None)),
        "date_updated": _iso(getattr(message, "date_updated", None)),
        "error_code": _int_or_none(getattr(message, "error_code", None)),
        "error_message": getattr(message, "error_message", None),
        "price": getattr(message, "price", None),
        "price_unit": getattr(message, "price_unit", None),
    }
    if include_body_sha256:
        result["body_sha256"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
    if include_body:
        result["body"] = body
    return result


class TwilioSmsHook(BaseHook):
    """
    Send and look up SMS through Twilio's Messages API.

    Numbers are checked and normalised to E.164, and the body and media checked against Twilio's
    limits, before any request; Twilio's answers become plain JSON and its failures this provider's
    typed errors (see the module docstring). Credentials come only from the connection.

    :param twilio_conn_id: a connection of type ``twilio_sms``.
    :param timeout: seconds to wait for Twilio (connecting, then reading). An answer that does not come in
        time after a message was sent is an unknown outcome (:class:`UnknownOutcomeError`), never "not sent".
    """

    conn_name_attr = "twilio_conn_id"
    default_conn_name = "twilio_sms_default"
    conn_type = "twilio_sms"
    hook_name = "Twilio SMS"

    def __init__(self, twilio_conn_id: str = default_conn_name, timeout: float = DEFAULT_TIMEOUT,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.twilio_conn_id = twilio_conn_id
        self.timeout = float(timeout)

    @cached_property
    def settings(self) -> TwilioConnectionSettings:
        """The connection's validated settings (read once per hook)."""
        from airflow_provider_twilio_sms.connection import load_settings

        return load_settings(self.twilio_conn_id)

    @cached_property
    def client(self) -> Client:
        """A twilio-python client isolated from ``os.environ``, with an explicit timeout and no retries.

        Shared by the hooks of this connection in this process while the values it is built from stay the
        same (credentials, host, timeout, the environment's proxy settings: :mod:`.clients`), so that
        consecutive tasks reuse its HTTP connections to Twilio.
        """
        from airflow_provider_twilio_sms.hooks.clients import fingerprint, shared_client
        from airflow_provider_twilio_sms.hooks.http_client import environment_settings

        s = self.settings
        made_of = fingerprint((*s.credentials, s.account_sid, s.region, s.api_edge, s.api_base_url,
                               self.timeout, environment_settings()))
        return shared_client(self.twilio_conn_id, made_of, self._new_client)

    def _new_client(self) -> Client:
        from twilio.rest import Client

        from airflow_provider_twilio_sms.hooks.http_client import http_client_class

        s = self.settings
        username, password = s.credentials
        local = bool(s.api_base_url)  # region and edge rewrite the host: never for an overridden base URL
        client = Client(
            username, password, s.account_sid,
            region=None if local else s.region,
            edge=None if local else s.api_edge,
            http_client=http_client_class()(timeout=self.timeout, logger=log),
            environment=dict(ISOLATED_ENVIRONMENT),
            user_agent_extensions=[USER_AGENT],
        )
        if local:
            client.api.base_url = s.api_base_url
        return client

    def get_conn(self) -> Client:
        """The twilio-python ``Client`` (see :attr:`client`)."""
        return self.client

    @property
    def api_url(self) -> str:
        """Where requests go: ``api_base_url``, else Twilio's host for the region and edge."""
        s = self.settings
        if s.api_base_url:
            return s.api_base_url
        region = s.region or ("us1" if s.api_edge else None)  # twilio-python's rule
        return "https://" + ".".join(p for p in ("api", s.api_edge, region, "twilio", "com") if p)

    # -- operations -----------------------------------------------------------------------------

    def send_message(
        self,
        to: str,
        body: str | None = None,
        *,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        media_url: str | Sequence[str] | None = None,
        status_callback: str | None = None,
        validity_period: int | None = None,
        content_sid: str | None = None,
        content_variables: Mapping[str, Any] | str | None = None,
        send_at: datetime | str | None = None,
    ) -> dict[str, Any]:
        """Create one message and return Twilio's answer as plain JSON (no body).

        Everything is validated first, so a bad request never reaches Twilio. ``to`` is an SMS number or a
        ``whatsapp:`` address (:mod:`.channels`), on the sender's channel. The sender is ``from_``
        and/or ``messaging_service_sid`` when given, else the connection's ``from_number``, else its
        ``messaging_service_sid``. ``content_sid`` (and ``content_variables``, a dict or its JSON) sends a
        Content template instead of ``body`` (:mod:`.content`). Sending again after an error is the
        caller's decision: see the module docstring for what each error means.

        ``send_at`` (an aware datetime or an ISO 8601 string with its offset) schedules the message
        (``ScheduleType=fixed``, ``SendAt`` in UTC): it needs a Messaging Service (the one given, else the
        connection's) and a moment 15 minutes to 35 days ahead, both checked here (see
        :mod:`~airflow_provider_twilio_sms.scheduling`). The answer's status is then ``scheduled``.
        """
        from airflow_provider_twilio_sms.channels import check_same_channel, normalize_address
        from airflow_provider_twilio_sms.content import validate_content
        from airflow_provider_twilio_sms.scheduling import check_window, parse_send_at, scheduled_sender
        from airflow_provider_twilio_sms.segments import message_units

        s = self.settings
        to = normalize_address(to, s.default_region)
        schedule_at = parse_send_at(send_at)
        if schedule_at is not None:
            from_, messaging_service_sid = scheduled_sender(s, from_, messaging_service_sid)
            schedule_at = check_window(schedule_at)
        else:
            from_, messaging_service_sid = s.resolve_sender(from_, messaging_service_sid)
        channel = check_same_channel(to, from_)
        media = [media_url] if isinstance(media_url, str) else list(media_url or [])
        content_sid, variables = validate_content(body, media, content_sid, content_variables)
        if status_callback is not None and not str(status_callback).startswith(("https://", "http://")):
            raise InvalidMessageError("status_callback is not an http(s) URL (Twilio error 21609): give the "
                                      "public URL Twilio should call with delivery statuses")
        if validity_period is not None:
            if isinstance(validity_period, bool) or _int_or_none(validity_period) is None or \
                    not 1 <= int(validity_period) <= MAX_VALIDITY_PERIOD:
                raise InvalidMessageError(f"validity_period must be a whole number of seconds from 1 to "
                                          f"{MAX_VALIDITY_PERIOD}, not {validity_period!r}")
            validity_period = int(validity_period)
        segments = message_units(to, body, content_sid)
        params: dict[str, Any] = {"to": to}
        for name, value in (("body", body), ("from_", from_),
                            ("messaging_service_sid", messaging_service_sid), ("media_url", media or None),
                            ("status_callback", status_callback), ("validity_period", validity_period),
                            ("content_sid", content_sid), ("content_variables", variables)):
            if value is not None:
                params[name] = value
        if schedule_at is not None:
            params.update(schedule_type="fixed", send_at=schedule_at)
        message = self._call(lambda: self.client.messages.create(**params), creates=True)
        result = message_to_dict(message, segments=segments)
        if schedule_at is not None:
            result["send_at"] = schedule_at.isoformat()
        self.log.info("Twilio accepted a%s %s message to %s: SID %s, status %s, %d %s unit(s)",
                      "" if content_sid else " free-form", channel, mask_number(to), mask_sid(result["sid"]),
                      result["status"], segments[0], segments[1] or "message")
        return result

    def fetch_message(self, sid: str) -> dict[str, Any]:
        """One message by SID, as plain JSON (no body)."""
        sid = _message_sid(sid)
        return message_to_dict(self._call(lambda: self.client.messages(sid).fetch(), creates=False))

    def cancel_scheduled(self, sid: str) -> dict[str, Any]:
        """Cancel a scheduled message as Twilio does (``POST .../Messages/{sid}.json`` with
        ``Status=canceled``); Twilio's answer as plain JSON (no body), status ``canceled``.

        Only a message still ``scheduled`` can be canceled: otherwise Twilio answers 30409, raised as
        :class:`MessageNotCancelableError`. Canceling is safe to repeat: the caller may ask again after an
        unknown outcome (the message is then canceled, or refused with 30409 once Twilio sent it).
        """
        sid = _message_sid(sid)
        try:
            message = self._call(lambda: self.client.messages(sid).update(status="canceled"), creates=False)
        except PermanentTwilioError as err:
            if err.code == NOT_CANCELABLE_CODE:
                raise MessageNotCancelableError(
                    f"message {mask_sid(sid)} cannot be canceled: Twilio says it is no longer scheduled "
                    "(already sent or being sent, or canceled) (Twilio error 30409)", code=err.code,
                    http_status=err.http_status, more_info=err.more_info) from None
            raise
        result = message_to_dict(message)
        self.log.info("Twilio canceled scheduled message %s (status %s)", mask_sid(sid), result["status"])
        return result

    def list_messages(self, *, to: str | None = None, from_: str | None = None,
                      date_sent_after: datetime | None = None, limit: int = 50,
                      include_body: bool = False) -> list[dict[str, Any]]:
        """Recent messages, newest first, as plain JSON with ``body_sha256``.

        ``date_sent_after`` keeps messages sent at or after that moment, and those created after it but
        not sent yet. It is applied here, not by Twilio: Twilio filters ``DateSent`` by whole days and
        leaves out messages still queued. At most ``limit`` of the newest messages matching
        ``to``/``from_`` are examined (reconciliation uses :meth:`messages_since`, which is bounded by
        time instead). The body is returned (under ``"body"``) only with ``include_body=True``.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit!r}")
        since = _aware(date_sent_after)
        found: list[Any] = []
        for page in self._pages(self._list_filters(to, from_), min(limit, LIST_PAGE_SIZE)):
            found.extend(page[:limit - len(found)])
            if len(found) >= limit:
                break
        return [message_to_dict(m, include_body_sha256=True, include_body=include_body)
                for m in found if since is None or _in_window(m, since)]

    def messages_since(self, since: datetime, *, to: str | None = None, from_: str | None = None,
                       page_size: int = LIST_PAGE_SIZE,
                       on_page: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Every message to ``to`` (and from ``from_``) that Twilio created at or after ``since``.

        For reconciliation, which must see them all however busy the number is: the walk through
        Twilio's pages ends by time, never after a number of messages. Two walks, each message once:

        1. ``DateSent>=`` the UTC day of ``since``: every page (Twilio bounds this set by the day);
        2. no date filter, newest first, until a page reaches a message created before ``since``:
           messages not sent yet (queued, accepted, scheduled) have no ``date_sent``, so Twilio's
           ``DateSent`` filter leaves out exactly the message an interrupted send may have left.

        Each message is plain JSON with ``body_sha256`` and ``body`` (kept in memory only: the caller
        compares it and must never log it). ``on_page`` is called after each page (to renew a lease).
        A failed page raises :class:`RetryableTwilioError` (or :class:`PermanentTwilioError` for a
        4xx), never twilio-python's own exception.
        """
        if page_size < 1 or page_size > LIST_PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {LIST_PAGE_SIZE}, not {page_size!r}")
        since = _aware(since)
        filters = self._list_filters(to, from_)
        found: dict[str | None, Any] = {}  # by SID

        def keep(page: list[Any]) -> None:
            for message in page:
                if _created_since(message, since):
                    found.setdefault(getattr(message, "sid", None), message)
            if on_page is not None:
                on_page()

        day = since.astimezone(timezone.utc).date().isoformat()
        for page in self._pages({**filters, "date_sent_after": day}, page_size):
            keep(page)
        for page in self._pages(filters, page_size):
            keep(page)
            if not page or any(not _created_since(m, since) for m in page):
                break
        return [message_to_dict(m, include_body_sha256=True, include_body=True) for m in found.values()]

    def fetch_statuses(self, sids: Sequence[str], *, created_after: datetime | None = None,
                       max_pages: int = 2, max_fetches: int = 5) -> dict[str, dict[str, Any] | None]:
        """What Twilio says of many messages, in at most ``max_pages + max_fetches`` requests however
        many SIDs are asked about: ``{sid: message as plain JSON (no body), or None when Twilio has no
        such message (deleted)}``. A SID missing from the answer was not asked about this time.

        One SID is fetched. More are looked for in the account's newest pages (1000 messages each),
        until all are found or a page reaches a message created before ``created_after``; those not
        found there are fetched one by one, at most ``max_fetches`` of them (the rest wait for the
        caller's next round). A failed request raises, as :meth:`fetch_message` does.
        """
        wanted = list(dict.fromkeys(s for s in sids if s))
        asked = set(wanted)
        found: dict[str, dict[str, Any] | None] = {}
        if len(wanted) > 1 and max_pages > 0:
            since = _aware(created_after)
            for number, page in enumerate(self._pages({}, LIST_PAGE_SIZE), start=1):
                for message in page:
                    if getattr(message, "sid", None) in asked:
                        found[message.sid] = message_to_dict(message)
                if len(found) == len(wanted) or number >= max_pages or not page or (
                        since is not None and any(not _created_since(m, since) for m in page)):
                    break
        for sid in [s for s in wanted if s not in found][:max_fetches]:
            try:
                found[sid] = self.fetch_message(sid)
            except PermanentTwilioError as err:
                if err.code != 20404 and err.http_status != 404:
                    raise
                self.log.info("Twilio has no message %s (deleted?)", mask_sid(sid))
                found[sid] = None
        return found

    def _list_filters(self, to: str | None, from_: str | None) -> dict[str, Any]:
        from airflow_provider_twilio_sms.channels import normalize_address

        region = self.settings.default_region
        filters: dict[str, Any] = {}
        if to:
            filters["to"] = normalize_address(to, region)
        if from_:
            filters["from_"] = normalize_address(from_, region, sender=True)
        return filters

    def _pages(self, filters: dict[str, Any], page_size: int) -> Iterator[list[Any]]:
        """Twilio's pages of messages for ``filters``, newest first, each fetched only when asked for."""
        page = self._call(lambda: self.client.messages.page(**filters, page_size=page_size), creates=False)
        while True:
            yield list(page)
            if not page.next_page_url:
                return
            page = self._call(page.next_page, creates=False)

    def test_connection(self) -> tuple[bool, str]:
        """Fetch the account: ``(True, "Connected to Twilio account AC…1234")`` or ``(False, reason)``.

        Never raises, and the reason never contains a secret.
        """
        try:
            settings = self.settings
        except ConnectionConfigError as err:
            # Airflow's Test button tests a copy under a random connection id: name the field, not the id.
            return False, f"{err.where[0].upper()}{err.where[1:]}: {err.problem}. {err.fix}"
        except TwilioSmsError as err:
            return False, str(err)
        except Exception as err:  # noqa: BLE001 - the UI wants a reason, not a traceback
            return False, f"Cannot read connection {self.twilio_conn_id!r}: {type(err).__name__}"
        try:
            account = self._call(lambda: self.client.api.v2010.accounts(settings.account_sid).fetch(),
                                 creates=False)
        except PermanentTwilioError as err:
            if err.code == 20003 or err.http_status == 401:
                return False, ("Twilio rejected the credentials (error 20003): check the Account SID and the "
                               "Auth Token, or the API key SID and secret")
            return False, settings.redact(f"Twilio refused to show the account: {err}")
        except RetryableTwilioError as err:
            if err.http_status is None:
                return False, settings.redact(f"Cannot reach Twilio at {self.api_url}: {err}")
            return False, settings.redact(f"Twilio is busy or unavailable: {err}")
        except TwilioSmsError as err:
            return False, settings.redact(str(err))
        except Exception as err:  # noqa: BLE001
            return False, settings.redact(f"Unexpected error talking to Twilio at {self.api_url}: "
                                          f"{type(err).__name__}")
        status = str(getattr(account, "status", None) or "active")
        who = f"Twilio account {mask_sid(getattr(account, 'sid', None) or settings.account_sid)}"
        if status != "active":
            return False, f"Connected to {who}, but it is {status}: it cannot send messages"
        return True, f"Connected to {who}"

    # -- error classification -------------------------------------------------------------------

    def _call(self, operation: Callable[[], Any], *, creates: bool) -> Any:
        """Run one Twilio request and turn its failures into this provider's typed errors.

        ``creates`` says whether the request creates a message: then a failure after the request left
        is an unknown outcome, not a failure. Twilio's own error text and the URL (which carries the
        numbers of a list query) are not chained into the raised error.
        """
        import json

        import requests
        from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException

        try:
            return operation()
        except (TwilioRestException, TwilioServiceException) as err:
            raise self._classify_response(err, creates) from None
        except TwilioException as err:  # a list page: twilio-python raises its base class with the response
            raise self._classify_page_failure(err, creates) from None
        except requests.exceptions.RequestException as err:
            raise self._classify_transport(err, creates) from None
        except json.JSONDecodeError:
            if creates:
                raise UnknownOutcomeError(
                    f"Twilio's answer to the new message could not be read; {_MAY_EXIST}") from None
            raise RetryableTwilioError("Twilio's answer could not be read") from None

    def _classify_response(self, err: Any, creates: bool) -> TwilioSmsError:
        status = _int_or_none(getattr(err, "status", None)) or 0
        code = _int_or_none(getattr(err, "code", None))
        if code == status:  # twilio-python puts the HTTP status in ``code`` when Twilio gave no code
            code = None
        what = f"{describe_error_code(code)} (HTTP {status})" if code else f"Twilio answered HTTP {status}"
        more = f"https://www.twilio.com/docs/errors/{code}" if code else None
        if status == 429 or code in RETRYABLE_CODES:
            retry_after = _retry_after_seconds(self._last_headers().get("retry-after"))
            return RetryableTwilioError(what, code=code or 20429, http_status=status, more_info=more,
                                        retry_after=retry_after)
        if code == OPTED_OUT_CODE:
            return OptedOutError(what, code=code, http_status=status, more_info=more)
        if status >= 500:
            if creates:
                return UnknownOutcomeError(f"{what} after the request was sent; {_MAY_EXIST}")
            return RetryableTwilioError(what, code=code, http_status=status, more_info=more)
        if code and more and describe_error_code(code) == f"Twilio error {code}":
            what += f": see {more}"
        return PermanentTwilioError(what, code=code, http_status=status, more_info=more)

    def _classify_page_failure(self, err: Exception, creates: bool) -> TwilioSmsError:
        """twilio-python's ``TwilioException("Unable to fetch page", response)``: classified by the
        response's HTTP status and Twilio's error code, like any other answer.
        """
        import json
        from types import SimpleNamespace

        response = next((arg for arg in err.args if hasattr(arg, "status_code")), None)
        if response is None:  # "Page Records can not be deserialized": a broken answer
            if creates:
                return UnknownOutcomeError(f"Twilio's answer could not be read; {_MAY_EXIST}")
            return RetryableTwilioError("Twilio's answer could not be read")
        try:
            code = json.loads(response.text or "{}").get("code")
        except (ValueError, AttributeError):
            code = None
        return self._classify_response(SimpleNamespace(status=response.status_code, code=code), creates)

    def _classify_transport(self, err: Exception, creates: bool) -> TwilioSmsError:
        import requests

        exc = requests.exceptions
        reason = _root_cause_name(err)
        if isinstance(err, (exc.InvalidURL, exc.MissingSchema, exc.InvalidSchema, exc.InvalidHeader)):
            return PermanentTwilioError(f"the request to Twilio could not be built ({type(err).__name__}); "
                                        f"check api_base_url, region and edge of the connection")
        if _never_left(err):
            return RetryableTwilioError(f"could not connect to Twilio ({reason}); the request never left")
        if isinstance(err, exc.Timeout):
            what = f"Twilio did not answer within {self.timeout:g} s"
        else:
            what = f"the connection to Twilio broke ({reason})"
        if creates:
            return UnknownOutcomeError(f"{what} after the request was sent; {_MAY_EXIST}")
        return RetryableTwilioError(what)

    def _last_headers(self) -> dict[str, str]:
        return getattr(self.client.http_client, "last_headers", None) or {}


@overload
def _aware(moment: datetime) -> datetime: ...


@overload
def _aware(moment: None) -> None: ...


def _aware(moment: datetime | None) -> datetime | None:
    """A naive moment is read as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def _message_sid(sid: str) -> str:
    sid = str(sid or "").strip()
    if not _MESSAGE_SID.fullmatch(sid):
        raise InvalidMessageError(f"{mask_sid(sid)} is not a message SID (SM or MM followed by 32 hex "
                                  "characters)")
    return sid


def _created_since(message: Any, since: datetime) -> bool:
    """Created at or after ``since`` (an unknown creation date: kept)."""
    moment = getattr(message, "date_created", None)
    return not isinstance(moment, datetime) or _aware(moment) >= since


def _in_window(message: Any, since: datetime) -> bool:
    """Sent at or after ``since``, or not sent yet and created at or after it (unknown dates: kept)."""
    moment = getattr(message, "date_sent", None) or getattr(message, "date_created", None)
    if not isinstance(moment, datetime):
        return True
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)) >= since


def _chain(err: BaseException):
    """``err`` and what it wraps: ``reason`` (urllib3), its arguments, ``__cause__`` (not the implicit
    ``__context__``, which may be an unrelated earlier error).
    """
    seen: set[int] = set()
    todo: list[Any] = [err]
    while todo:
        inner = todo.pop(0)
        if not isinstance(inner, BaseException) or id(inner) in seen:
            continue
        seen.add(id(inner))
        yield inner
        todo.extend([getattr(inner, "reason", None), *inner.args, inner.__cause__])


def _never_left(err: Exception) -> bool:
    """Whether the request certainly never reached Twilio: no connection was ever made.

    Connection refused, DNS failure, connect timeout, proxy failure, TLS certificate rejected. A reset,
    a read timeout or a TLS error after the handshake may come after the request was sent.
    """
    import ssl

    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProxyError

    if isinstance(err, (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError)):
        return True
    return any(isinstance(inner, (NewConnectionError, ConnectTimeoutError, ProxyError, ConnectionRefusedError,
                                  ssl.SSLCertVerificationError))
               for inner in _chain(err))


def _root_cause_name(err: Exception) -> str:
    """The innermost exception's class name (``ConnectionResetError``); never its text, which has the URL."""
    names = [type(inner).__name__ for inner in _chain(err)]
    return names[-1] if names else type(err).__name__


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if value is None or str(value).strip() == "":
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())
