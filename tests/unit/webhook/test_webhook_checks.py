"""The webhook's checks one by one: body cap (declared and streamed), content type, the URL Twilio signed,
and the well-formedness of what the store keeps."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest
from starlette.requests import Request
from twilio.request_validator import RequestValidator

from airflow_provider_twilio_sms.connection import TwilioConnectionSettings
from airflow_provider_twilio_sms.webhook.verification import (
    FORM,
    Refused,
    content_kind,
    read_body,
    signed_url,
    verify,
)

ACCOUNT = "AC" + "2" * 32
SETTINGS = TwilioConnectionSettings(conn_id="tw", account_sid=ACCOUNT, auth_token="tok",
                                    webhook_base_url="https://public.example.com/airflow")
PATH = "/twilio_sms/webhooks/tw/status"


def request(headers: dict[str, str] | None = None, chunks: list[bytes] = (), path: str = PATH,
            query: str = "", host: str = "10.0.0.7:8080"):
    """A Starlette request as an ASGI server builds it, whose body arrives in ``chunks``."""
    sent: list[int] = []
    pending = list(chunks) or [b""]

    async def receive():
        chunk = pending.pop(0)
        sent.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": host, **(headers or {})}.items()]
    scope = {"type": "http", "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "headers": raw, "server": ("10.0.0.7", 8080), "root_path": ""}
    return Request(scope, receive), sent


def test_declared_oversize_is_refused_before_reading_anything():
    req, sent = request({"content-length": "70000"}, [b"x" * 70000])
    with pytest.raises(Refused) as refused:
        asyncio.run(read_body(req, 65536))
    assert refused.value.status == 413
    assert sent == []


def test_streamed_oversize_stops_at_the_first_chunk_past_the_cap():
    req, sent = request({}, [b"x" * 40000] * 10)  # chunked: no Content-Length
    with pytest.raises(Refused) as refused:
        asyncio.run(read_body(req, 65536))
    assert refused.value.status == 413
    assert len(sent) == 2  # 80000 > 65536 after two of ten chunks


def test_a_body_within_the_cap_is_read_whole():
    req, _ = request({}, [b"a=1&", b"b=2"])
    assert asyncio.run(read_body(req, 65536)) == b"a=1&b=2"


@pytest.mark.parametrize("value", ["-1", "12abc", " "])
def test_malformed_content_length_is_refused(value):
    req, _ = request({"content-length": value})
    with pytest.raises(Refused) as refused:
        asyncio.run(read_body(req, 65536))
    assert refused.value.status == 400


@pytest.mark.parametrize(("content_type", "ok"), [
    ("application/x-www-form-urlencoded", True), ("application/x-www-form-urlencoded; charset=UTF-8", True),
    ("Application/JSON", True), ("text/plain", False), ("multipart/form-data; boundary=x", False),
    (None, False)])
def test_content_types(content_type, ok):
    req, _ = request({"content-type": content_type} if content_type else {})
    if ok:
        assert content_kind(req)
    else:
        with pytest.raises(Refused) as refused:
            content_kind(req)
        assert refused.value.status == 415


def test_signed_url_is_the_public_base_with_our_path_and_the_raw_query():
    req, _ = request(query="ik=order%2F1&team=qa")
    assert signed_url(SETTINGS, req, "tw", "status") == (
        "https://public.example.com/airflow/twilio_sms/webhooks/tw/status?ik=order%2F1&team=qa")
    without_base = TwilioConnectionSettings(conn_id="tw", account_sid=ACCOUNT, auth_token="tok")
    assert signed_url(without_base, req, "tw", "status") == f"http://10.0.0.7:8080{PATH}?ik=order%2F1&team=qa"


def _verify(params: dict, query: str = "", headers: dict | None = None, kind: str = "status"):
    url = signed_url(SETTINGS, request(query=query)[0], "tw", kind)
    body = urlencode(params).encode()
    sig = RequestValidator("tok").compute_signature(url, params)
    req, _ = request({"content-type": FORM, "x-twilio-signature": sig, **(headers or {})}, query=query)
    return verify(SETTINGS, req, FORM, body, "tw", kind)


GOOD = {"MessageSid": "SM" + "a" * 32, "AccountSid": ACCOUNT, "MessageStatus": "Delivered",
        "From": "+15005550006", "To": "+447700900123"}


def test_a_good_callback_is_parsed():
    cb = _verify(dict(GOOD, ErrorCode="30003"), query="ik=k1",
                 headers={"i-twilio-idempotency-token": "tok-1"})
    assert (cb.message_sid, cb.status, cb.error_code, cb.query, cb.idempotency_token) == (
        GOOD["MessageSid"], "delivered", 30003, {"ik": "k1"}, "tok-1")


@pytest.mark.parametrize("sender", ["MyCompany", "Acme 2024", "12345", "+12025550123",
                                    "whatsapp:+12025550123"])
def test_senders_twilio_uses_are_accepted(sender):
    assert _verify(dict(GOOD, From=sender)).params["From"] == sender


@pytest.mark.parametrize(("changes", "kind"), [
    ({"MessageSid": "SM" + "a" * 31}, "status"),
    ({"MessageSid": "XX" + "a" * 32}, "status"),
    ({"MessageSid": "SM" + "a" * 32 + "\n"}, "status"),  # "$" would let a trailing newline through
    ({"MessageStatus": "sent\n"}, "status"),
    ({"To": "+0123"}, "status"),
    ({"From": "messenger:+15005550006"}, "status"),  # whatsapp: addresses are accepted, other channels not
    ({"From": "123456789012"}, "status"),  # neither E.164 nor a short code nor a sender ID
    ({"MessageStatus": "deliv ered"}, "status"),
    ({"ErrorCode": "1" * 10}, "status"),
    ({"NumMedia": "100", "Body": "x"}, "inbound"),
    ({"OptOutType": "STOP-ALL"}, "inbound"),
    ({"From": ""}, "inbound"),
])
def test_malformed_fields_are_400(changes, kind):
    with pytest.raises(Refused) as refused:
        _verify({**GOOD, **changes}, kind=kind)
    assert refused.value.status == 400


def test_duplicated_field_is_400_even_when_signed():
    params = list(GOOD.items()) + [("AccountSid", ACCOUNT)]
    url = signed_url(SETTINGS, request()[0], "tw", "status")
    sig = RequestValidator("tok").compute_signature(url, GOOD)  # a set of values signs the same
    req, _ = request({"content-type": FORM, "x-twilio-signature": sig})
    with pytest.raises(Refused) as refused:
        verify(SETTINGS, req, FORM, urlencode(params).encode(), "tw", "status")
    assert refused.value.status == 400


@pytest.mark.parametrize("query", ["ik=" + "k" * 256, "ik_sha256=" + "A" * 64, "ik_sha256=" + "a" * 65,
                                   "ik_sha256=order-1"])
def test_overlong_query_values_are_400(query):
    with pytest.raises(Refused) as refused:
        _verify(GOOD, query=query)
    assert refused.value.status == 400
