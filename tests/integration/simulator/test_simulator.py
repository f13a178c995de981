"""The stand-in speaks Twilio's Messages API: checked with twilio-python's own client and Twilio's spec."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from airflow_provider_twilio_sms.simulator.server import TwilioSimulator

from simulator_testing import OURS, TO, messages_url, twilio_client, wait_until

SID = re.compile(r"^SM[0-9a-f]{32}$")
RFC2822 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$")


def _spec_example(name: str) -> dict:
    from conftest import TWILIO_OAI

    if not TWILIO_OAI.exists():
        pytest.skip(f"Twilio's OpenAPI description is not at {TWILIO_OAI}")
    spec = json.loads(TWILIO_OAI.read_text())
    post = spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["post"]
    return post["responses"]["201"]["content"]["application/json"]["examples"][name]["value"]


def test_create_answers_201_with_twilios_message_shape(twilio_sim):
    r = requests.post(messages_url(twilio_sim), data={"To": TO, "From": OURS, "Body": "Hello! 👍"},
                      auth=(twilio_sim.account_sid, twilio_sim.auth_token))
    assert r.status_code == 201
    assert r.headers["Content-Type"].startswith("application/json")
    message = r.json()
    example = _spec_example("create")
    assert set(example) <= set(message), f"missing fields: {set(example) - set(message)}"
    assert SID.match(message["sid"])
    assert message["account_sid"] == twilio_sim.account_sid
    assert message["status"] == "queued"
    assert message["direction"] == "outbound-api"
    assert message["api_version"] == "2010-04-01"
    assert message["body"] == "Hello! 👍"
    assert (message["to"], message["from"]) == (TO, OURS)
    assert (message["num_segments"], message["num_media"]) == ("1", "0")  # strings, as Twilio sends them
    assert message["date_sent"] is None
    assert message["error_code"] is None
    assert message["price"] is None
    for key in ("date_created", "date_updated"):
        assert RFC2822.match(message[key]), message[key]
        assert abs(parsedate_to_datetime(message[key]) - datetime.now(timezone.utc)) < timedelta(seconds=5)
    base = f"/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages/{message['sid']}"
    assert message["uri"] == base + ".json"
    assert message["subresource_uris"]["media"] == base + "/Media.json"
    assert r.headers["Twilio-Request-Id"].startswith("RQ")


def test_sids_are_unique_and_fetch_returns_the_message(twilio_sim):
    client = twilio_client(twilio_sim)
    sids = {client.messages.create(to=TO, from_=OURS, body=f"hello {i}").sid for i in range(20)}
    assert len(sids) == 20
    assert all(SID.match(s) for s in sids)
    sid = sorted(sids)[0]
    fetched = client.messages(sid).fetch()
    assert (fetched.sid, fetched.to, fetched.from_) == (sid, TO, OURS)
    assert fetched.body.startswith("hello")


def test_status_advances_to_delivered_without_a_status_callback(twilio_sim):
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, from_=OURS, body="hi").sid
    message = wait_until(lambda: (m := client.messages(sid).fetch()).status == "delivered" and m)
    assert message.date_sent is not None
    assert message.price == "-0.00790"
    assert message.price_unit == "USD"
    assert twilio_sim.callbacks() == []


def test_list_filters_by_number_and_pages_like_twilio(twilio_sim):
    client = twilio_client(twilio_sim)
    mine = [client.messages.create(to=TO, from_=OURS, body=f"m{i}").sid for i in range(5)]
    client.messages.create(to="+14155550100", from_=OURS, body="other")
    listed = client.messages.list(to=TO, page_size=2)
    assert [m.sid for m in listed] == list(reversed(mine))  # newest first, across three pages
    assert twilio_sim.count("list") == 3
    assert [m.sid for m in client.messages.list(to=TO, limit=3, page_size=2)] == list(reversed(mine))[:3]
    assert len(client.messages.list(from_=OURS)) == 6
    assert client.messages.list(to="+14155550199") == []

    auth = (twilio_sim.account_sid, twilio_sim.auth_token)
    page = requests.get(messages_url(twilio_sim), params={"To": TO, "PageSize": 2}, auth=auth).json()
    assert set(page) == {"messages", "page", "page_size", "start", "end", "uri", "first_page_uri",
                         "next_page_uri", "previous_page_uri"}
    assert (page["page"], page["page_size"], page["start"], page["end"]) == (0, 2, 0, 1)
    assert page["previous_page_uri"] is None
    assert page["first_page_uri"] == (f"/2010-04-01/Accounts/{twilio_sim.account_sid}/Messages.json"
                                      "?To=%2B14155550123&PageSize=2&Page=0")
    assert page["next_page_uri"].endswith(f"&PageSize=2&Page=1&PageToken=PA{mine[3]}")
    middle = requests.get(twilio_sim.base_url + page["next_page_uri"], auth=auth).json()
    last = requests.get(twilio_sim.base_url + middle["next_page_uri"], auth=auth).json()
    assert [m["sid"] for m in middle["messages"]] == [mine[2], mine[1]]
    assert (middle["start"], middle["end"]) == (2, 3)
    assert [m["sid"] for m in last["messages"]] == [mine[0]]
    assert last["next_page_uri"] is None
    back = requests.get(twilio_sim.base_url + last["previous_page_uri"], auth=auth).json()
    assert [m["sid"] for m in back["messages"]] == [mine[2], mine[1]]


def test_the_page_token_keeps_the_next_page_stable_when_new_messages_arrive(twilio_sim):
    client = twilio_client(twilio_sim)
    sids = [client.messages.create(to=TO, from_=OURS, body=f"m{i}").sid for i in range(4)]
    auth = (twilio_sim.account_sid, twilio_sim.auth_token)
    first = requests.get(messages_url(twilio_sim), params={"PageSize": 2}, auth=auth).json()
    client.messages.create(to=TO, from_=OURS, body="newer")
    second = requests.get(twilio_sim.base_url + first["next_page_uri"], auth=auth).json()
    assert [m["sid"] for m in second["messages"]] == [sids[1], sids[0]]


@pytest.mark.parametrize("params", [{"PageSize": "0"}, {"PageSize": "1001"}, {"Page": "-1"},
                                    {"PageSize": "x"}, {"DateSent>": "yesterday"}])
def test_bad_list_parameters_are_refused(twilio_sim, params):
    auth = (twilio_sim.account_sid, twilio_sim.auth_token)
    r = requests.get(messages_url(twilio_sim), params=params, auth=auth)
    assert r.status_code == 400
    assert r.json()["code"] == 20001


def test_date_sent_filters_compare_whole_days_and_skip_unsent_messages():
    now = [datetime(2026, 3, 10, 9, 30, tzinfo=timezone.utc)]
    with TwilioSimulator(callback_delay=0.01, clock=lambda: now[0]) as sim:
        client = twilio_client(sim)
        old = client.messages.create(to=TO, from_=OURS, body="yesterday").sid
        wait_until(lambda: sim.message(old)["status"] == "delivered")
        now[0] = datetime(2026, 3, 11, 8, 0, tzinfo=timezone.utc)
        new = client.messages.create(to=TO, from_=OURS, body="today").sid
        wait_until(lambda: sim.message(new)["status"] == "delivered")
        sim.callback_delay = 3600  # this one stays queued: no date_sent
        queued = client.messages.create(to=TO, from_=OURS, body="not sent yet").sid

        def sids(**filters):
            return [m.sid for m in client.messages.list(**filters)]

        assert sids() == [queued, new, old]
        assert sids(date_sent=datetime(2026, 3, 10)) == [old]
        assert sids(date_sent_before=datetime(2026, 3, 10, 0, 0)) == [old]  # on or before that day
        assert sids(date_sent_after=datetime(2026, 3, 11, 23, 59)) == [new]  # on or after that day
        assert sids(date_sent_after=datetime(2026, 3, 10, 12, 0)) == [new, old]  # days, not times
        assert sids(date_sent_after="2026-03-12") == []
        assert sim.message(old)["date_sent"] == "Tue, 10 Mar 2026 09:30:00 +0000"


class TestAuth:
    def test_a_wrong_token_is_refused_with_20003(self, twilio_sim):
        with pytest.raises(TwilioRestException) as err:
            twilio_client(twilio_sim, auth_token="wrong").messages.create(to=TO, from_=OURS, body="x")
        assert (err.value.status, err.value.code) == (401, 20003)
        r = requests.get(messages_url(twilio_sim))
        assert r.status_code == 401
        assert r.json()["code"] == 20003
        assert "Basic" in r.headers["WWW-Authenticate"]
        assert twilio_sim.count("unauthorized") == 2
        assert twilio_sim.messages() == []

    def test_another_accounts_message_is_not_found(self, twilio_sim):
        sid = twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body="x").sid
        other = "AC" + "9" * 32
        twilio_sim.add_account(other, "other-token")
        with pytest.raises(TwilioRestException) as err:
            twilio_client(twilio_sim, account_sid=other, auth_token="other-token").messages(sid).fetch()
        assert (err.value.status, err.value.code) == (404, 20404)
        assert twilio_client(twilio_sim, account_sid=other, auth_token="other-token").messages.list() == []
        # our token does not open the other account (list answers fail as a page error)
        with pytest.raises(TwilioException) as err:
            twilio_client(twilio_sim, account_sid=other).messages.list()
        assert err.value.args[1].status_code == 401

    def test_api_key_and_secret_work_for_their_own_account_only(self, twilio_sim):
        key = "SK" + "1" * 32
        twilio_sim.add_api_key(key, "key-secret", twilio_sim.account_sid)
        client = Client(key, "key-secret", twilio_sim.account_sid, environment={"ISOLATED": "1"})
        client.api.base_url = twilio_sim.base_url
        assert client.messages.create(to=TO, from_=OURS, body="x").status == "queued"
        other = "AC" + "8" * 32
        twilio_sim.add_account(other, "t")
        stranger = Client(key, "key-secret", other, environment={"ISOLATED": "1"})
        stranger.api.base_url = twilio_sim.base_url
        with pytest.raises(TwilioException) as err:
            stranger.messages.list()
        assert err.value.args[1].status_code == 401

    def test_the_secondary_token_also_authenticates_during_a_rotation(self, twilio_sim):
        twilio_sim.add_account(twilio_sim.account_sid, "new-primary", "old-secondary")
        for token in ("new-primary", "old-secondary"):
            assert twilio_client(twilio_sim, auth_token=token).messages.list() == []

    def test_fetching_the_account_answers_like_twilio(self, twilio_sim):
        account = twilio_client(twilio_sim).api.v2010.accounts(twilio_sim.account_sid).fetch()
        assert account.sid == twilio_sim.account_sid
        assert account.status == "active"
        assert account.type == "Full"
        assert twilio_sim.count("account") == 1


@pytest.mark.parametrize(("to", "from_", "body", "code"), [
    ("+15005550001", OURS, "x", 21211), ("+15005550002", OURS, "x", 21612),
    ("+15005550003", OURS, "x", 21408), ("+15005550004", OURS, "x", 21610),
    ("+15005550009", OURS, "x", 21614), (TO, "+15005550001", "x", 21212),
    (TO, "+15005550007", "x", 21606), (TO, "+15005550008", "x", 21611), (TO, OURS, "x" * 1601, 21617),
    (TO, OURS, "", 21602), ("12", OURS, "x", 21211), ("+1555", OURS, "x", 21211),
    ("4155550123", OURS, "x", 21211), (TO, "not a number!", "x", 21212), (OURS, OURS, "x", 21266),
])
def test_magic_numbers_and_invalid_requests_are_refused_with_twilios_codes(twilio_sim, to, from_, body, code):
    with pytest.raises(TwilioRestException) as err:
        twilio_client(twilio_sim).messages.create(to=to, from_=from_, body=body)
    assert (err.value.status, err.value.code) == (400, code)
    assert twilio_sim.messages() == []
    [record] = twilio_sim.creates()
    assert (record["status_code"], record["error_code"], record["sid"]) == (400, code, None)


@pytest.mark.parametrize(("form", "code"), [
    ({"From": OURS, "Body": "x"}, 21604),
    ({"To": "", "From": OURS, "Body": "x"}, 21604),
    ({"To": TO, "Body": "x"}, 21603),
    ({"To": TO, "From": OURS}, 21602),
    ([("To", TO), ("From", OURS)] + [("MediaUrl", f"https://example.com/{i}.jpg") for i in range(11)], 21623),
    ({"To": TO, "From": OURS, "Body": "x", "ValidityPeriod": "0"}, 21624),
    ({"To": TO, "From": OURS, "Body": "x", "ValidityPeriod": "abc"}, 21624),
    ({"To": TO, "From": OURS, "Body": "x", "StatusCallback": "not a url"}, 21609),
    ({"To": TO, "From": OURS, "Body": "x", "StatusCallback": "http://my_host/cb"}, 21609),
    ({"To": TO, "MessagingServiceSid": "MG123", "Body": "x"}, 21701),
    ({"To": TO, "From": OURS, "Body": "x", "ProvideFeedback": "maybe"}, 20001),
])
def test_missing_and_malformed_parameters_are_refused(twilio_sim, form, code):
    auth = (twilio_sim.account_sid, twilio_sim.auth_token)
    r = requests.post(messages_url(twilio_sim), data=form, auth=auth)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == code
    assert body["status"] == 400
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert body["message"]
    assert twilio_sim.messages() == []


def test_media_only_and_ten_media_urls_are_accepted(twilio_sim):
    client = twilio_client(twilio_sim)
    urls = [f"https://example.com/{i}.jpg" for i in range(10)]
    message = client.messages.create(to=TO, from_=OURS, media_url=urls)
    assert message.num_media == "10"
    assert message.sid.startswith("MM")
    assert message.body == ""
    assert twilio_sim.creates()[-1]["media_urls"] == urls


def test_a_messaging_service_picks_the_sender_when_the_message_leaves(twilio_sim):
    service = "MG" + "a" * 32
    twilio_sim.set_inbound_url("+14155550111", "http://127.0.0.1:9/unused", messaging_service_sid=service)
    client = twilio_client(twilio_sim)
    message = client.messages.create(to=TO, messaging_service_sid=service, body="hi")
    assert message.status == "accepted"
    assert message.from_ is None
    assert message.messaging_service_sid == service
    assert wait_until(lambda: client.messages(message.sid).fetch().from_) == "+14155550111"


@pytest.mark.parametrize(("body", "segments"), [
    ("a" * 160, "1"), ("a" * 161, "2"), ("a" * 306, "2"), ("a" * 307, "3"),
    ("ж" * 70, "1"), ("ж" * 71, "2"), ("€" * 80, "1"), ("€" * 81, "2"),
])
def test_segments_are_counted_as_twilio_bills_them(twilio_sim, body, segments):
    assert twilio_client(twilio_sim).messages.create(to=TO, from_=OURS, body=body).num_segments == segments


def test_a_scheduled_message_waits_for_its_send_time(twilio_sim):
    send_at = datetime.now(timezone.utc) + timedelta(hours=1)
    client = twilio_client(twilio_sim)
    message = client.messages.create(to=TO, messaging_service_sid="MG" + "b" * 32, body="later",
                                     schedule_type="fixed", send_at=send_at)
    assert message.status == "scheduled"
    too_soon = datetime.now(timezone.utc) + timedelta(minutes=5)
    with pytest.raises(TwilioRestException) as err:
        client.messages.create(to=TO, messaging_service_sid="MG" + "b" * 32, body="too soon",
                               schedule_type="fixed", send_at=too_soon)
    assert err.value.code == 35114


def test_delete_and_redact(twilio_sim):
    client = twilio_client(twilio_sim)
    sid = client.messages.create(to=TO, from_=OURS, body="secret code 1234").sid
    assert client.messages(sid).update(body="").body == ""
    assert client.messages(sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        client.messages(sid).fetch()
    assert err.value.status == 404


def test_link_shortening_replaces_urls_and_needs_a_messaging_service(twilio_sim):
    """``ShortenUrls=true`` is for Messaging Services with Link Shortening: Twilio stores (and sends) the
    text with each URL replaced by a short link; without a service the request is refused."""
    auth = (twilio_sim.account_sid, twilio_sim.auth_token)
    body = "Track it at https://shop.example.com/orders/8812?ref=sms today"
    r = requests.post(messages_url(twilio_sim), data={"To": TO, "MessagingServiceSid": "MG" + "1" * 32,
                                                      "Body": body, "ShortenUrls": "true"}, auth=auth)
    assert r.status_code == 201
    assert re.fullmatch(r"Track it at https://twil\.io/\S+ today", r.json()["body"])
    refused = requests.post(messages_url(twilio_sim), data={"To": TO, "From": OURS, "Body": body,
                                                            "ShortenUrls": "true"}, auth=auth)
    assert refused.status_code == 400
    assert "MessagingServiceSid" in refused.json()["message"]
