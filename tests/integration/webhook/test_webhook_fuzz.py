"""No input gives a 5xx: schemathesis generates requests from the app's own OpenAPI document (valid ones and
ones that break it) and sends them to the real api-server app with the plugin, on SQLite and PostgreSQL.

- the read API, as an admin and as a viewer (bodies withheld), over a store holding messages and replies;
- the webhook routes unsigned (every answer a 4xx) and signed with the connection's Auth Token by
  twilio-python's RequestValidator, so the form parsing, the field checks and the store writes run.

The case count is bounded and the generation deterministic (``derandomize``): the same cases on every run.
"""

from __future__ import annotations

import pytest
import schemathesis  # in the test extra: a missing install fails here, it is never skipped
from hypothesis import (
    HealthCheck,
    given,
    settings,
    strategies as st,
)
from schemathesis import GenerationMode
from twilio.request_validator import RequestValidator

from webhook_testing import (
    ACCOUNT,
    BASE,
    CONN_ID,
    INBOUND,
    TOKEN,
    inbound_params,
    make_client,
    post_signed,
    send_row,
    status_params,
    twilio_connection,
    use_store,
)

PREFIX = "/twilio_sms"
EXAMPLES = 60  # per generation mode and group of routes: 360 requests a database


def fuzzing(**kwargs):
    return settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), **kwargs)


@pytest.fixture
def app(request, store, monkeypatch):
    """The api-server app (plugin mounted) over a store with outbound messages, callbacks and replies."""
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_DEFAULT", twilio_connection())
    use_store(monkeypatch, store)
    client = make_client("api-server", request)
    for i in range(3):
        send_row(store, f"fuzz-{i}", sid=f"SM{i + 1:032x}", body=f"code {i}")
    post_signed(client, f"{PREFIX}/webhooks/{CONN_ID}/status", status_params("delivered", sid=f"SM{1:032x}"))
    post_signed(client, INBOUND, inbound_params("STOP"))
    return client.app


def schema_of(app, path_regex: str):
    schema = schemathesis.openapi.from_asgi(f"{PREFIX}/openapi.json", app).include(path_regex=path_regex)
    schema.config.generation.update(allow_x00=True)
    return schema


def tokens() -> dict[str, dict[str, str]]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = get_auth_manager()
    jwt = {role: manager.generate_jwt(SimpleAuthManagerUser(username=role, role=role))
           for role in ("admin", "viewer")}
    return {role: {"Authorization": f"Bearer {token}"} for role, token in jwt.items()}


def answered(case, response) -> int:
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r} -> "
        f"{response.status_code}: {response.text[:500]}")
    return response.status_code


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_read_api_never_answers_5xx(app, mode):
    schema = schema_of(app, r"^/api/")
    headers = tokens()
    seen: set[int] = set()

    @fuzzing()
    @given(case=schema.as_strategy(mode), role=st.sampled_from(sorted(headers)))
    def read(case, role):
        seen.add(answered(case, case.call(headers=headers[role])))

    read()
    assert 200 in seen if mode == GenerationMode.POSITIVE else 422 in seen, seen


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_unsigned_webhook_requests_get_a_4xx(app, mode):
    schema = schema_of(app, r"^/webhooks/")

    @fuzzing()
    @given(case=schema.as_strategy(mode))
    def post(case):
        assert 400 <= answered(case, case.call()) < 500

    post()


def _form(body) -> dict[str, str]:
    """The generated body as the form fields it is sent as (a signature covers strings only)."""
    if not isinstance(body, dict):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in body.items() if not isinstance(v, list)}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_signed_webhook_forms_are_stored_or_refused_never_5xx(app, mode):
    """Signed by the connection's token, for its account: what is left to refuse is the fields' shape."""
    schema = schema_of(app, r"^/webhooks/")
    outcomes: set[int] = set()

    @fuzzing()
    @given(case=schema.as_strategy(mode, path_parameters={"conn_id": CONN_ID}), ours=st.booleans())
    def post(case, ours):
        form = _form(case.body)
        if ours:  # most refusals would otherwise stop at the account check
            form["AccountSid"] = ACCOUNT
        path = f"{PREFIX}{case.formatted_path}"
        signature = RequestValidator(TOKEN).compute_signature(f"{BASE}{path}", form)
        case.body = form
        case.media_type = "application/x-www-form-urlencoded"
        case.headers = {**(case.headers or {}), "X-Twilio-Signature": signature}
        outcomes.add(answered(case, case.call()))

    post()
    if mode == GenerationMode.POSITIVE:
        assert 200 in outcomes, outcomes  # well-formed, signed forms were stored
    assert outcomes - {200} <= {400, 403, 413, 415, 422}, outcomes
