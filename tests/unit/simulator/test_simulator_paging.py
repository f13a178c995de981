"""List filters and paging, on stored messages directly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest

from airflow_provider_twilio_sms.simulator.errors import TwilioApiError
from airflow_provider_twilio_sms.simulator.messages import StoredMessage
from airflow_provider_twilio_sms.simulator.paging import filter_messages, list_page

DAY = datetime(2026, 1, 15, 10, 0, tzinfo=timezone.utc)
PATH = "/2010-04-01/Accounts/AC1/Messages.json"


def _rows(n=7):
    rows = []
    for i in range(n):  # newest first: row 0 was sent last
        sent = DAY - timedelta(days=i) if i != 3 else None
        resource = {"sid": f"SM{i:032d}", "to": "+1415555010" + str(i % 2), "from": "+15005550006"}
        rows.append(StoredMessage(resource, seq=n - i, created_at=DAY - timedelta(days=i), sent_at=sent))
    return rows


def _sids(rows):
    return [r.resource["sid"][-1] for r in rows]


def test_filters():
    rows = _rows()
    assert _sids(filter_messages(rows, {"To": "+14155550100"})) == ["0", "2", "4", "6"]
    assert _sids(filter_messages(rows, {"DateSent": "2026-01-14"})) == ["1"]
    assert _sids(filter_messages(rows, {"DateSent>": "2026-01-13T23:00:00Z"})) == ["0", "1", "2"]
    assert _sids(filter_messages(rows, {"DateSent<": "2026-01-11"})) == ["4", "5", "6"]  # 3 was never sent
    assert _sids(filter_messages(rows, {"DateSent>": "2026-01-11", "DateSent<": "2026-01-12"})) == ["4"]
    assert _sids(filter_messages(rows, {"DateSent>": "2026-01-14T12:00:00+02:00"})) == ["0", "1"]


def test_pages_follow_the_page_token():
    rows = _rows()
    page = list_page(rows, {"PageSize": "3"}, PATH)
    assert _sids([StoredMessage(m, 0, DAY) for m in page["messages"]]) == ["0", "1", "2"]
    seen = []
    while True:
        seen += [m["sid"][-1] for m in page["messages"]]
        if not page["next_page_uri"]:
            break
        query = dict(parse_qsl(urlsplit(page["next_page_uri"]).query))
        assert urlsplit(page["next_page_uri"]).path == PATH
        page = list_page(rows, query, PATH)
    assert seen == list("0123456")
    assert page["page"] == 2
    assert (page["start"], page["end"]) == (6, 6)
    back = list_page(rows, dict(parse_qsl(urlsplit(page["previous_page_uri"]).query)), PATH)
    assert [m["sid"][-1] for m in back["messages"]] == ["3", "4", "5"]


def test_an_empty_list():
    page = list_page([], {}, PATH)
    assert page["messages"] == []
    assert page["next_page_uri"] is None
    assert page["page_size"] == 50
    assert page["first_page_uri"] == PATH + "?PageSize=50&Page=0"


@pytest.mark.parametrize("query", [{"PageSize": "0"}, {"PageSize": "1001"}, {"Page": "-2"},
                                   {"DateSent": "soon"}])
def test_bad_values_are_twilios_20001(query):
    with pytest.raises(TwilioApiError) as err:
        list_page(_rows(), query, PATH)
    assert (err.value.code, err.value.status) == (20001, 400)
