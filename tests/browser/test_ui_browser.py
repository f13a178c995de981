"""The Airflow UI in a real browser: the Twilio SMS connection form and the "Twilio SMS" page.

Debian's Chromium, driven by playwright-core (ui_suite.js), against a real ``airflow api-server`` on
127.0.0.1 with this provider's plugin, signing in through Airflow's login page. The local Twilio stand-in
is the only stand-in: it answers the connection test, sends the messages and calls the webhook back.

One module-scoped scenario, in the order a user goes:
1. admin creates a Twilio SMS connection with the form (team_b), saves, presses Test with a bad SID, then a
   wrong token, then the right token; reopens it and sees the secrets redacted;
2. messages are sent through the real send path for team_a (a connection made with the REST API) and
   team_b (the one made in the form); the stand-in calls the api-server's webhook back with signed
   statuses and inbound replies (one of them STOP);
3. admin opens "Twilio SMS" from Airflow's Browse menu (light, bodies on request, dark); alice (team_a)
   and bob (team_b) see only their team's messages, their bodies withheld (Viewers may not read
   connections).

Screenshots: test-output/browser/. Skipped with the reason when Chromium, node or playwright-core is
missing, unless TWILIO_SMS_TEST_REQUIRE names ``browser`` (CI): then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from airflow_server import AirflowApiServer
from conftest import MIGRATED_METADATA_DB, REPO, skip_or_fail

OUT_DIR = REPO / "test-output" / "browser"
PLAYWRIGHT_CORE = REPO / ".tools" / "node_modules" / "playwright-core"
SUITE = Path(__file__).with_name("ui_suite.js")
UI_CONN = "twilio_sms_ui"  # made in the form, owned by team_b
API_CONN = "twilio_sms_team_a"  # made with the REST API, owned by team_a
OUR_NUMBER_A = "+15005550006"  # the stand-in's valid From; team_a's inbound number
OUR_NUMBER_B = "+14155559900"  # team_b's inbound number
TEAM_A_TO = ["+14155550101", "+14155550102", "+14155550103"]
TEAM_B_TO = ["+14155550201", "+14155550202"]
STOPPER = "+14155550109"


def chromium_path() -> str:
    path = os.environ.get("TWILIO_SMS_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        skip_or_fail("browser", f"Chromium is not at {path} (apt-get install -y chromium; "
                                "scripts/bootstrap.sh does it as root)")
    if shutil.which("node") is None:
        skip_or_fail("browser", "node is not on PATH")
    if not (PLAYWRIGHT_CORE / "package.json").exists():
        skip_or_fail("browser", f"playwright-core is not installed under {PLAYWRIGHT_CORE.parent} "
                                "(scripts/bootstrap.sh installs it with npm)")
    return path


def airflow_has_port_bug() -> bool:
    """Airflow 3.3.2's Test button sends port 0 for a connection without a port, which its API refuses
    with 400 (apache/airflow#73298 fixed the API side)."""
    from airflow.api_fastapi.core_api.routes.public import connections

    same = getattr(connections, "_same_endpoint", None)
    return same is not None and not same(0, None)


def run_suite(phase: str, config: dict, tmp: Path, timeout: float = 240) -> dict:
    config_path, report_path = tmp / f"{phase}-config.json", tmp / f"{phase}-report.json"
    config_path.write_text(json.dumps(config))
    started = time.monotonic()
    result = subprocess.run(["node", str(SUITE), phase, str(config_path), str(report_path)],
                            capture_output=True, text=True, timeout=timeout, check=False)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["seconds"] = round(time.monotonic() - started, 1)
    print(f"browser phase {phase}: {report['seconds']} s, exit {result.returncode}")
    failure = f"the browser phase {phase!r} failed: {report.get('error') or result.stderr[-3000:]}"
    assert result.returncode == 0, failure
    assert report.get("ok"), failure
    return report


def twilio_conn_json(sim, base_url: str, *, from_number: str = OUR_NUMBER_A, team: str | None = None) -> dict:
    spec = {"conn_type": "twilio_sms", "login": sim.account_sid, "password": sim.auth_token,
            "extra": json.dumps({"from_number": from_number, "api_base_url": sim.base_url,
                                 "webhook_base_url": base_url})}
    if team:
        spec["team_name"] = team
    return spec


def rest(server: AirflowApiServer, method: str, path: str, body: dict | None = None,
         user: str = "admin") -> dict:
    request = urllib.request.Request(f"{server.base_url}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {server.token(user)}"})
    with urllib.request.urlopen(request, timeout=20) as answer:
        return json.loads(answer.read() or b"{}")


def send_messages(sim, server, store, monkeypatch) -> dict[str, list[str]]:
    """Send through the real send path (SmsSender, the operator's status callback URL) for both teams, the
    texts kept ([twilio_sms] store_outbound_bodies on) so that the page has bodies to show or withhold."""
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.sending import SendRequest, SmsSender
    from airflow_provider_twilio_sms.webhook.urls import status_callback_url

    for conn_id in (UI_CONN, API_CONN):  # what the workers would read; same values as in the api-server
        spec = twilio_conn_json(sim, server.base_url)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}",
                           json.dumps({**spec, "extra": json.loads(spec["extra"])}))
    sim.set_outcome(TEAM_A_TO[2], "undelivered", 30003)
    sim.set_outcome(TEAM_B_TO[1], "failed", 30007)
    sids: dict[str, list[str]] = {"team_a": [], "team_b": []}
    plan = [(API_CONN, "team_a", to, f"Your code is 12345{i}") for i, to in enumerate(TEAM_A_TO)]
    plan += [(UI_CONN, "team_b", to, f"Team B reminder {i}") for i, to in enumerate(TEAM_B_TO)]
    for i, (conn_id, team, to, body) in enumerate(plan):
        hook = TwilioSmsHook(twilio_conn_id=conn_id)
        key = f"browser-{team}-{i}"
        result = SmsSender(hook, store, store_bodies=True).send(SendRequest(
            to=to, body=body, idempotency_key=key, team=team, dag_id=f"{team}_notify", task_id="send",
            run_id="manual__browser", map_index=-1,
            status_callback=status_callback_url(hook.settings, conn_id, key)))
        sids[team].append(result["sid"])
    sim.set_inbound_url(OUR_NUMBER_A, f"{server.base_url}/twilio_sms/webhooks/{API_CONN}/inbound")
    sim.set_inbound_url(OUR_NUMBER_B, f"{server.base_url}/twilio_sms/webhooks/{UI_CONN}/inbound")
    for from_, to, body in ((TEAM_A_TO[0], OUR_NUMBER_A, "YES confirmed"), (STOPPER, OUR_NUMBER_A, "STOP"),
                            (TEAM_B_TO[0], OUR_NUMBER_B, "Team B says hello")):
        answer = sim.send_inbound(from_, to, body)
        assert answer["status_code"] == 200, f"the webhook refused an inbound message: {answer}"
        sids.setdefault(f"inbound_{'a' if to == OUR_NUMBER_A else 'b'}", []).append(answer["message_sid"])
    deadline = time.monotonic() + 30
    final = {"delivered", "undelivered", "failed"}
    while True:
        rows = {r["sid"]: r for r in store.list_messages(limit=50)}
        if all(rows.get(s, {}).get("status") in final for s in sids["team_a"] + sids["team_b"]):
            break
        assert time.monotonic() < deadline, (
            f"callbacks did not arrive: {[r['status'] for r in rows.values()]}; "
            f"api-server log:\n{server.log_tail()}")
        time.sleep(0.3)
    return sids


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_path()


@pytest.fixture(scope="module")
def ui(chromium, airflow_home, tmp_path_factory):
    """The stand-in and a real api-server (plugin mounted, multi-team, three users), for the module."""
    import _pytest.monkeypatch

    from airflow_provider_twilio_sms.simulator.server import TwilioSimulator
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    tmp = tmp_path_factory.mktemp("browser")
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    store_url = f"sqlite:///{tmp / 'store.db'}"
    upgrade_url(store_url)
    store = SmsStore(store_url)
    monkeypatch = _pytest.monkeypatch.MonkeyPatch()
    with TwilioSimulator(callback_delay=0.2) as sim:
        server = AirflowApiServer(tmp / "airflow-home", MIGRATED_METADATA_DB, extra_env={
            "AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT": json.dumps(
                {"conn_type": "generic", "extra": {"sqlalchemy_url": store_url}})})
        try:
            server.create_teams()
            server.start()
            yield {"sim": sim, "server": server, "store": store, "tmp": tmp, "monkeypatch": monkeypatch,
                   "config": {"baseUrl": server.base_url, "passwords": server.passwords(),
                              "chromium": chromium, "playwrightCore": str(PLAYWRIGHT_CORE),
                              "outDir": str(OUT_DIR), "connId": UI_CONN, "uiRoute": "twilio_sms",
                              "airflowPortBug": airflow_has_port_bug()}}
        finally:
            server.stop()
            monkeypatch.undo()
            (OUT_DIR / "api-server.log").write_text(server.log_tail(200_000))


@pytest.fixture(scope="module")
def connection_report(ui):
    sim, server = ui["sim"], ui["server"]
    config = {**ui["config"], "connection": {
        "bad_sid": "AC-not-a-sid", "account_sid": sim.account_sid, "wrong_token": "wrong-auth-token-0000",
        "auth_token": sim.auth_token, "team": "team_b",
        "extra": {"from_number": OUR_NUMBER_A, "webhook_base_url": server.base_url,
                  "api_base_url": sim.base_url, "rate_limit": "100/1h",
                  "webhook_signing_key_secret": "browser-signing-secret",
                  "webhook_signing_key_sid": "webhooks_sharedkey_browser"}}}
    return run_suite("connection", config, ui["tmp"])


@pytest.fixture(scope="module")
def messages_report(ui, connection_report):
    server = ui["server"]
    rest(server, "POST", "/api/v2/connections", {"connection_id": API_CONN, **twilio_conn_json(
        ui["sim"], server.base_url, team="team_a")})
    sids = send_messages(ui["sim"], server, ui["store"], ui["monkeypatch"])
    report = run_suite("messages", {**ui["config"], "viewers": ["admin", "alice", "bob"]}, ui["tmp"])
    report["sids"] = sids
    return report


# --- the connection form ----------------------------------------------------------------------------

def test_the_form_shows_labelled_twilio_fields_with_secrets_as_password_fields(connection_report):
    fields = {f["name"]: f for f in connection_report["form"]}
    labels = {f["label"] for f in fields.values()}
    for label in ("Account SID", "Auth Token", "From number", "Messaging Service SID", "API key SID",
                  "API key secret", "Webhook base URL", "Rate limit", "Webhook signing key SID",
                  "Webhook signing key secret", "Secondary Auth Token", "API base URL"):
        assert label in labels, f"{label!r} missing from the form: {sorted(labels)}"
    assert not {"host", "port", "schema"} & set(fields), "irrelevant standard fields are shown"
    assert fields["login"]["placeholder"].startswith("AC")
    for secret in ("password", "element_api_key_secret", "element_secondary_auth_token",
                   "element_webhook_signing_key_secret"):
        assert fields[secret]["type"] == "password", f"{secret} is not a password field"
    assert "E.164" in fields["element_from_number"]["help"]


def test_reopened_connection_shows_secrets_redacted(connection_report, ui):
    fields = {f["name"]: f for f in connection_report["reopened"]}
    assert fields["password"]["value"] == "***"
    assert fields["element_webhook_signing_key_secret"]["value"] == "***"
    assert fields["element_from_number"]["value"] == OUR_NUMBER_A
    assert fields["element_webhook_signing_key_sid"]["value"] == "webhooks_sharedkey_browser"
    stored = rest(ui["server"], "GET", f"/api/v2/connections/{UI_CONN}")  # what the form was filled from
    assert stored["password"] == "***"
    assert json.loads(stored["extra"])["webhook_signing_key_secret"] == "***"
    assert stored["team_name"] == "team_b"
    shown = json.dumps([connection_report["reopened"], connection_report["tests"], stored])
    for secret in ("browser-signing-secret", "wrong-auth-token-0000", "simulator-auth-token"):
        assert secret not in shown, "a secret reached the page after saving"


def _test_message(result: dict) -> tuple[bool, str]:
    if result.get("without_port") is not None:  # Airflow 3.3.2's Test button bug: see ui_suite.js
        assert result["http_status"] == 400
        assert "Bad Request" in result["toast"]
        return result["without_port"]["status"], result["without_port"]["message"]
    return result["toast_type"] == "success", result["toast"]


def test_the_test_button_reports_success_and_clear_reasons(connection_report, ui):
    tests = {t["label"]: t for t in connection_report["tests"]}
    ok, message = _test_message(tests["bad-sid"])
    assert not ok, message
    assert "'login' (Account SID)" in message, message
    assert "AC followed by 32 hex" in message, message
    ok, message = _test_message(tests["wrong-token"])
    assert not ok, message
    assert "20003" in message, message
    assert "rejected the credentials" in message, message
    assert "wrong-auth-token" not in message
    ok, message = _test_message(tests["good"])
    assert ok, message
    assert message.startswith("Connected to Twilio account AC"), message
    assert ui["sim"].auth_token not in json.dumps(connection_report["tests"])


# --- the messages page ------------------------------------------------------------------------------

def test_admin_sees_messages_with_statuses_and_timelines(messages_report):
    view = messages_report["views"]["admin"]
    assert view["notice"] is None
    by_sid = {m["sid"]: m for m in view["messages"]}
    a, b = messages_report["sids"]["team_a"], messages_report["sids"]["team_b"]
    assert set(a + b) <= set(by_sid)
    assert [by_sid[s]["status"] for s in a] == ["delivered", "delivered", "undelivered"]
    assert [by_sid[s]["status"] for s in b] == ["delivered", "failed"]
    assert by_sid[a[0]]["timeline"] == ["sent", "delivered"]
    assert by_sid[a[2]]["timeline"] == ["sent", "undelivered"]
    summary = view["summary"]
    assert summary["total"] == "5"
    assert summary["delivered"] == "3"
    assert summary["failed"] == "2"
    assert summary["delivery_rate"] == "60.0 %"
    assert summary["opt_outs"] == "1"
    assert summary["inbound"] == "3"
    codes = {row[0]: row for row in view["failures"]}
    assert "30003" in codes
    assert "unreachable" in codes["30003"][1]
    assert codes["30003"][2] == "1"
    assert "30007" in codes
    assert "spam" in codes["30007"][1]
    assert len(view["inbound"]) == 3
    assert len(view["opt_outs"]) == 1
    assert view["opt_outs"][0][0] == "***0109"


def test_numbers_are_masked_and_bodies_shown_only_on_request(messages_report):
    view = messages_report["views"]["admin"]
    for number in TEAM_A_TO + TEAM_B_TO + [STOPPER]:
        assert number not in view["text"]
        assert number[1:] not in view["text"]
    assert "***0101" in view["text"]
    assert not any(m["body_visible"] or m["body"] for m in view["messages"])
    assert "Your code is" not in view["text"]
    assert "Team B says hello" not in view["text"]
    shown = view["with_bodies"]
    assert all(m["body_visible"] for m in shown["messages"])
    assert "Your code is 123450" in {m["body"] for m in shown["messages"]}
    assert "Team B says hello" in {m["body"] for m in shown["inbound"]}
    assert not any(m["body_withheld"] for m in shown["messages"] + shown["inbound"])


def test_viewers_who_may_not_read_the_connection_see_bodies_withheld(messages_report):
    """alice and bob are Viewers: Airflow lets them see their teams' messages, not read the connections,
    so ticking "Show message bodies" shows each body as withheld, with the reason in its tooltip."""
    for user in ("alice", "bob"):
        shown = messages_report["views"][user]["with_bodies"]
        rows = shown["messages"] + shown["inbound"]
        assert rows, shown
        assert all(m["body_visible"] and m["body"] == "withheld" for m in rows), rows
        assert all("you may not read connection" in m["body_withheld"] for m in rows)
        for text in ("Your code is", "Team B", "YES confirmed", "STOP"):
            assert all(text not in m["body"] for m in rows)


def test_the_page_follows_airflow_dark_mode(messages_report):
    view = messages_report["views"]["admin"]
    assert not view["dark"]
    assert view["dark_mode"]["dark"]
    assert view["background"] != view["dark_mode"]["background"]


def test_each_viewer_sees_only_their_teams_messages(messages_report):
    sids = messages_report["sids"]
    for user, mine, theirs in (("alice", "a", "b"), ("bob", "b", "a")):
        view = messages_report["views"][user]
        assert view["notice"] is None, view["notice"]
        shown = {m["sid"] for m in view["messages"]}
        assert shown == set(sids[f"team_{mine}"]), f"{user} sees {shown}"
        inbound = {m["sid"] for m in view["inbound"]}
        assert inbound == set(sids[f"inbound_{mine}"])
        assert not inbound & set(sids[f"inbound_{theirs}"])
        assert int(view["summary"]["total"]) == len(sids[f"team_{mine}"])
        assert f"team_{theirs}" not in view["text"]
    assert len(messages_report["views"]["alice"]["opt_outs"]) == 1
    assert messages_report["views"]["bob"]["opt_outs"] == []


def test_the_page_shows_nothing_without_a_session(messages_report):
    assert "not signed in" in messages_report["anonymous"]["notice"]
    assert messages_report["anonymous"]["rows"] == 0


def test_screenshots_were_saved(messages_report, connection_report):
    for name in ("connection-form-filled", "connection-form-reopened", "connection-test-good",
                 "messages-admin-light", "messages-admin-bodies", "messages-admin-dark",
                 "messages-alice-light", "messages-bob-light", "messages-alice-bodies"):
        path = OUT_DIR / f"{name}.png"
        assert path.exists(), f"{path} missing"
        assert path.stat().st_size > 10_000, f"{path} empty"
