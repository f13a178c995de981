"""Helpers for the webhook tests: Twilio-signed requests (twilio-python's own RequestValidator), the two
ways the app is served (the real api-server app with the plugin, and the standalone app), the store."""

from __future__ import annotations

import functools
import json
import threading
import time
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from airflow_provider_twilio_sms.store import tables as t
from airflow_provider_twilio_sms.store.api import SmsStore

ACCOUNT = "AC" + "6" * 32
TOKEN = "primary-auth-token"
SECONDARY = "secondary-auth-token"
SIGNING_KEY_SID = "webhooks_sharedkey_0123456789abcdef"
SIGNING_KEY_SECRET = "shared-key-secret"
BASE = "https://airflow.example.com"
API_TOKEN = "read-api-token"
SID = "SM" + "7" * 32
OURS = "+15005550006"
THEM = "+14155550123"
CONN_ID = "twilio_sms_default"
STATUS = f"/twilio_sms/webhooks/{CONN_ID}/status"
INBOUND = f"/twilio_sms/webhooks/{CONN_ID}/inbound"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def twilio_connection(**extra) -> str:
    return json.dumps({"conn_type": "twilio_sms", "login": ACCOUNT, "password": TOKEN, "extra": {
        "from_number": OURS, "webhook_base_url": BASE, "secondary_auth_token": SECONDARY,
        "webhook_signing_key_sid": SIGNING_KEY_SID, "webhook_signing_key_secret": SIGNING_KEY_SECRET,
        **extra}})


def metadata_db_connection(conn_id: str, team: str | None = None, **extra):
    """Store a twilio_sms connection in Airflow's metadata database (as the UI or `airflow connections
    add` would); returns a function that deletes it."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    spec = json.loads(twilio_connection(**extra))
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == conn_id).delete()
        session.add(Connection(conn_id=conn_id, conn_type=spec["conn_type"], login=spec["login"],
                               password=spec["password"], extra=json.dumps(spec["extra"]), team_name=team))

    def delete() -> None:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()

    return delete


def use_store(monkeypatch, store: SmsStore) -> SmsStore:
    """Point ``twilio_sms_store_default`` at ``store`` (what the app finds at its first request)."""
    url = store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT",
                       json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}}))
    return store


def migrated_sqlite_store(url: str) -> SmsStore:
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    upgrade_url(url)
    return SmsStore(url)


@functools.lru_cache(maxsize=1)
def airflow_api_app():
    """The real api-server app (plugins included), built once per process like the api-server does."""
    from airflow.api_fastapi.app import create_app

    return create_app()


def plugin_state():
    """The plugin's webhook app state inside the api-server app."""
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    [mounted] = [a for a in apps if a["url_prefix"] == "/twilio_sms"]
    return mounted["app"].state.twilio_sms


def make_client(mode: str, request) -> TestClient:
    """A TestClient on the api-server app (plugin mounted at /twilio_sms) or on the standalone app."""
    if mode == "standalone":
        from airflow_provider_twilio_sms.webhook.app import create_app

        return TestClient(create_app("standalone"))
    request.getfixturevalue("airflow_home")  # the api-server's auth reads the metadata DB
    client = TestClient(airflow_api_app())
    plugin_state().reset()  # the app is shared by tests: the next request finds this test's store
    request.addfinalizer(plugin_state().reset)
    return client


def app_state(client: TestClient):
    state = getattr(client.app.state, "twilio_sms", None)
    return state if state is not None else plugin_state()


def sign(path: str, params: dict, token: str = TOKEN, url: str | None = None) -> dict[str, str]:
    """The X-Twilio-Signature Twilio sends for ``params`` posted to ``url`` (default: BASE + path)."""
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url or f"{BASE}{path}", params)}


def status_params(status: str = "delivered", sid: str = SID, **extra) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "AccountSid": ACCOUNT, "From": OURS, "To": THEM, "ApiVersion": "2010-04-01", **extra}


def inbound_params(body: str = "YES", sid: str = "SM" + "8" * 32, **extra) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": ACCOUNT, "From": THEM,
            "To": OURS, "Body": body, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01",
            **extra}


def post(client, path: str, params: dict, headers: dict | None = None, query: str = ""):
    """POST ``params`` form-encoded, as Twilio does."""
    return client.post(f"{path}?{query}" if query else path, content=urlencode(params),
                       headers={**FORM, **(headers or {})})


def post_signed(client, path: str, params: dict, query: str = "", token: str = TOKEN,
                headers: dict | None = None):
    url = f"{BASE}{path}?{query}" if query else f"{BASE}{path}"
    return post(client, path, params, {**sign(path, params, token=token, url=url), **(headers or {})}, query)


def snapshot(store: SmsStore) -> dict[str, int]:
    """Row counts of every table the webhook may write."""
    with store.engine.connect() as c:
        return {name: c.execute(select(func.count()).select_from(table)).scalar()
                for name, table in (("event", t.event), ("message", t.message), ("opt_out", t.opt_out))}


def event_count(store: SmsStore) -> int:
    return snapshot(store)["event"]


def signer_of(account: str = ACCOUNT, token: str | None = TOKEN, **settings) -> str:
    """The signer the webhook records for a connection with this Account SID and Auth Token."""
    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

    return TwilioConnectionSettings(conn_id="any", account_sid=account, auth_token=token, **settings).signer


def send_row(store: SmsStore, key: str, sid: str | None = SID, team: str | None = None,
             body: str | None = "hi", conn_id: str = CONN_ID, account: str = ACCOUNT, token: str = TOKEN,
             from_number: str | None = OURS, messaging_service_sid: str | None = None, to: str = THEM,
             store_body: bool = True):
    """An outbound message as the operator leaves it: claimed (by ``conn_id``, with ``account`` and the
    signer of ``token``; its text kept, as with ``[twilio_sms] store_outbound_bodies`` on, unless
    ``store_body=False``), and recorded as queued when ``sid`` is set."""
    from airflow_provider_twilio_sms.store.claims import make_scope

    claim = store.claim(scope=make_scope(account, team), idempotency_key=key, account_sid=account,
                        conn_id=conn_id, signer=signer_of(account, token), to_number=to, body=body, team=team,
                        from_number=from_number, messaging_service_sid=messaging_service_sid, dag_id="dag",
                        task_id="send", run_id="run", store_body=store_body)
    if sid is not None:
        store.record_sent(claim, {"sid": sid, "status": "queued", "num_segments": 1})
    return claim


class ServedApp:
    """An ASGI app served by uvicorn on a free loopback port in a thread (real sockets, real concurrency)."""

    def __init__(self, app, port: int):
        import uvicorn

        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                pytest.fail("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"
