"""Only Twilio's requests for the connection's account reach the store: every refusal leaves the store
unchanged and nothing but a masked log line, on the api-server app and the standalone app."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from webhook_testing import (
    ACCOUNT,
    BASE,
    FORM,
    INBOUND,
    SIGNING_KEY_SECRET,
    SIGNING_KEY_SID,
    STATUS,
    THEM,
    TOKEN,
    inbound_params,
    make_client,
    migrated_sqlite_store,
    post,
    sign,
    signer_of,
    snapshot,
    status_params,
    twilio_connection,
    use_store,
)

GOOD = status_params("delivered")
RECEIVER = "airflow_provider_twilio_sms.webhook.receiver"  # the logger of refusal lines
OTHER_ACCOUNT = "AC" + "f" * 32


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    return migrated_sqlite_store(f"sqlite:///{tmp_path_factory.mktemp('refusals') / 'store.db'}")


@pytest.fixture(params=["api-server", "standalone"])
def client(request, monkeypatch, shared_db):
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())
    monkeypatch.setenv("AIRFLOW_CONN_NOT_TWILIO", json.dumps({"conn_type": "http", "login": ACCOUNT,
                                                              "password": TOKEN}))
    use_store(monkeypatch, shared_db)
    return make_client(request.param, request)


def _form(params):
    return urlencode(params)


def _signed(params, **kw):
    return {**FORM, **sign(STATUS, params, **kw)}


def _with(**changes):
    return dict(GOOD, **changes)


# (name, path, body, headers, expected status)
CASES = [
    ("no signature", STATUS, _form(GOOD), FORM, 403),
    ("empty signature", STATUS, _form(GOOD), {**FORM, "X-Twilio-Signature": ""}, 403),
    ("wrong token", STATUS, _form(GOOD), _signed(GOOD, token="not-the-token"), 403),
    ("tampered parameter", STATUS, _form(_with(MessageStatus="failed")), _signed(GOOD), 403),
    ("extra parameter", STATUS, _form(_with(Injected="1")), _signed(GOOD), 403),
    ("missing parameter", STATUS, _form({k: v for k, v in GOOD.items() if k != "ErrorCode" and k != "To"}),
     _signed(GOOD), 403),
    ("url mismatch: host", STATUS, _form(GOOD), _signed(GOOD, url=f"https://evil.example.com{STATUS}"), 403),
    ("url mismatch: path", STATUS, _form(GOOD), _signed(GOOD, url=f"{BASE}{INBOUND}"), 403),
    ("url mismatch: query", f"{STATUS}?ik=other", _form(GOOD), _signed(GOOD, url=f"{BASE}{STATUS}?ik=mine"),
     403),
    ("url mismatch: scheme", STATUS, _form(GOOD),
     _signed(GOOD, url=f"http://airflow.example.com{STATUS}"), 403),
    ("wrong account", STATUS, _form(_with(AccountSid=OTHER_ACCOUNT)),
     _signed(_with(AccountSid=OTHER_ACCOUNT)), 403),
    ("unknown shared key", STATUS, _form(GOOD), {
        **FORM, "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_other,algorithm=HMAC_SHA256",
        "X-Twilio-Signature": RequestValidator(SIGNING_KEY_SECRET).compute_signature(f"{BASE}{STATUS}", GOOD,
                                                                                     "HMAC_SHA256")}, 403),
    ("shared key, unsupported algorithm", STATUS, _form(GOOD), {
        **FORM, "X-Twilio-Webhooks-Signature-Settings": f"key={SIGNING_KEY_SID},algorithm=HMAC_MD5",
        **sign(STATUS, GOOD, token=SIGNING_KEY_SECRET)}, 403),
    ("auth token signature claiming a shared key", STATUS, _form(GOOD), {
        **_signed(GOOD),
        "X-Twilio-Webhooks-Signature-Settings": f"key={SIGNING_KEY_SID},algorithm=HMAC_SHA1"}, 403),
    ("non-ascii signature", STATUS, _form(GOOD), {**FORM, "X-Twilio-Signature": "é".encode("latin-1")}, 403),
    ("json without bodySHA256", STATUS, json.dumps(GOOD),
     {"Content-Type": "application/json", **sign(STATUS, {})}, 403),
    ("unknown conn id", "/twilio_sms/webhooks/nope/status", _form(GOOD),
     {**FORM, **sign("/twilio_sms/webhooks/nope/status", GOOD)}, 404),
    ("connection of another type", "/twilio_sms/webhooks/not_twilio/status", _form(GOOD),
     {**FORM, **sign("/twilio_sms/webhooks/not_twilio/status", GOOD)}, 404),
    ("conn id that is no id", "/twilio_sms/webhooks/a%20b/status", _form(GOOD), _signed(GOOD), 404),
    ("wrong content type", STATUS, _form(GOOD), {**_signed(GOOD), "Content-Type": "text/plain"}, 415),
    ("no content type", STATUS, _form(GOOD), {k: v for k, v in _signed(GOOD).items() if k != "Content-Type"},
     415),
    ("multipart", STATUS, _form(GOOD), {**_signed(GOOD), "Content-Type": "multipart/form-data; boundary=x"},
     415),
    ("oversize body", STATUS, _form(_with(Body="x" * 70_000)), _signed(_with(Body="x" * 70_000)), 413),
    ("malformed MessageSid", STATUS, _form(_with(MessageSid="SM123")), _signed(_with(MessageSid="SM123")),
     400),
    ("missing MessageSid", STATUS, _form({k: v for k, v in GOOD.items() if k != "MessageSid"}),
     _signed({k: v for k, v in GOOD.items() if k != "MessageSid"}), 400),
    ("bad phone format", STATUS, _form(_with(To="call me!")), _signed(_with(To="call me!")), 400),
    ("status too long for the store", STATUS, _form(_with(MessageStatus="x" * 30, SmsStatus="x" * 30)),
     _signed(_with(MessageStatus="x" * 30, SmsStatus="x" * 30)), 400),
    ("status missing", STATUS, _form({k: v for k, v in GOOD.items() if "Status" not in k}),
     _signed({k: v for k, v in GOOD.items() if "Status" not in k}), 400),
    ("error code not a number", STATUS, _form(_with(ErrorCode="3000x")), _signed(_with(ErrorCode="3000x")),
     400),
    ("NUL in a field", STATUS, _form(_with(Price="1\x00")), _signed(_with(Price="1\x00")), 400),
    ("malformed idempotency token", STATUS, _form(GOOD),
     {**_signed(GOOD), "I-Twilio-Idempotency-Token": "a b"}, 400),
]


@pytest.mark.parametrize(("name", "path", "body", "headers", "code"), CASES, ids=[c[0] for c in CASES])
def test_refused_and_nothing_stored(client, shared_db, caplog, name, path, body, headers, code):
    before = snapshot(shared_db)
    with caplog.at_level(logging.WARNING, logger="airflow_provider_twilio_sms"):
        response = client.post(path, content=body, headers=headers)
    assert response.status_code == code, response.text
    assert response.content == b""  # no detail for the caller
    assert snapshot(shared_db) == before
    [line] = [r.getMessage() for r in caplog.records if r.name == RECEIVER]
    assert f"HTTP {code}" in line
    for secret in (TOKEN, THEM, GOOD["MessageSid"], "x" * 100):
        assert secret not in caplog.text


def test_inbound_refusals_leave_no_opt_out(client, shared_db):
    params = inbound_params("STOP", OptOutType="STOP")
    before = snapshot(shared_db)
    assert post(client, INBOUND, params, sign(INBOUND, params, token="wrong")).status_code == 403
    forged = dict(params, AccountSid=OTHER_ACCOUNT)
    assert post(client, INBOUND, forged, sign(INBOUND, forged)).status_code == 403
    assert snapshot(shared_db) == before
    assert not shared_db.is_opted_out(ACCOUNT, THEM, signer=signer_of())


def test_oversize_body_without_content_length_is_refused_while_streaming(client, shared_db):
    params = _with(Body="y" * 70_000)
    chunks = [_form(params)[i:i + 4096].encode() for i in range(0, len(_form(params)), 4096)]
    before = snapshot(shared_db)
    # An iterable body goes out chunked: no Content-Length.
    response = client.post(STATUS, content=iter(chunks), headers=_signed(params))
    assert response.status_code == 413
    assert snapshot(shared_db) == before


@pytest.mark.parametrize(("first", "second", "code"), [
    ("unknown conn id", "wrong content type", 404),
    ("wrong content type", "oversize body", 415),
    ("oversize body", "no signature", 413),
    ("no signature", "wrong account", 403),
    ("wrong account", "malformed MessageSid", 403),
])
def test_checks_run_in_order(client, first, second, code):
    """A request failing two checks gets the earlier one's answer."""
    path = "/twilio_sms/webhooks/nope/status" if "conn id" in first else STATUS
    params = dict(GOOD)
    headers = dict(FORM)
    if "oversize" in first or "oversize" in second:
        params["Body"] = "z" * 70_000
    if "account" in first or "account" in second:
        params["AccountSid"] = OTHER_ACCOUNT
    if "MessageSid" in second:
        params["MessageSid"] = "SM1"
    if "signature" not in first + second:
        headers.update(sign(path, params))
    if "content type" in first + second:
        headers["Content-Type"] = "text/plain"
    assert client.post(path, content=_form(params), headers=headers).status_code == code


def test_request_values_cannot_forge_log_lines(client, caplog):
    with caplog.at_level(logging.WARNING, logger="airflow_provider_twilio_sms"):
        for conn_id in ("x%0AINFO%20forged", "x%0D%0Aforged", "x%E2%80%A8forged"):
            client.post(f"/twilio_sms/webhooks/{conn_id}/status", content=_form(GOOD), headers=_signed(GOOD))
    # (Inside the api-server a path with a newline does not even reach the plugin's mount.)
    lines = [r.getMessage() for r in caplog.records if r.name == RECEIVER]
    assert lines
    assert not any(c in line for line in lines for c in "\n\r\u2028")
