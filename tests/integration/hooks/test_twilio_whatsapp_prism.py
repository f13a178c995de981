"""The hook's WhatsApp and Content template requests against Twilio's published OpenAPI contract (Prism).

Prism answers 422 to a request that breaks the contract, so each 2xx proves that the request the hook built
for a ``whatsapp:`` address, a ``ContentSid`` and a ``ContentVariables`` JSON string is one Twilio accepts.
"""

from __future__ import annotations

import pytest
from test_twilio_sms_prism import prism_conn

from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook

pytestmark = pytest.mark.prism
__all__ = ["prism_conn"]  # the fixture: the connection's api_base_url is Prism

TEMPLATE = "HX" + "0" * 31 + "1"
WA_OURS = "whatsapp:+15005550006"


def test_a_whatsapp_template_request_is_in_the_contract(prism_conn):
    result = TwilioSmsHook().send_message(
        "WhatsApp:+1 (415) 555-0123", from_=WA_OURS, content_sid=TEMPLATE,
        content_variables={"1": "5/6", "2": "9am"},
        status_callback="https://airflow.example.com/twilio_sms/webhooks/twilio_sms_default/status")
    assert result["sid"].startswith("SM")
    assert (result["segments"], result["encoding"]) == (1, None)  # WhatsApp: one message, no SMS encoding


def test_a_free_form_whatsapp_request_and_a_service_sender_are_in_the_contract(prism_conn):
    assert TwilioSmsHook().send_message("whatsapp:+14155550123", "Thanks, got it",
                                        from_=WA_OURS)["sid"].startswith("SM")
    result = TwilioSmsHook().send_message("whatsapp:+14155550123", content_sid=TEMPLATE,
                                          messaging_service_sid="MG" + "b" * 32)
    assert result["sid"].startswith("SM")


def test_an_sms_template_request_is_in_the_contract(prism_conn):
    result = TwilioSmsHook().send_message("+14155550123", from_="+15005550006", content_sid=TEMPLATE,
                                          content_variables={"name": "Ada"})
    assert result["sid"].startswith("SM")


def test_listing_by_whatsapp_address_is_in_the_contract(prism_conn):
    assert TwilioSmsHook().list_messages(to="whatsapp:+14155550123", from_=WA_OURS, limit=5)
