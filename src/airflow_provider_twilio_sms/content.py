"""Twilio Content templates (``ContentSid`` + ``ContentVariables``), on SMS and WhatsApp alike.

A template is made in Twilio's Content Template Builder (or Content API) and named by its SID, ``HX`` and
32 hex characters. A message sends it with ``ContentSid`` instead of ``Body``; ``ContentVariables`` is a
JSON *string* of placeholder values: ``{"1": "12/1", "2": "3pm"}`` or ``{"name": "Ada"}``. WhatsApp needs an
approved template for any business-initiated message outside the 24-hour window opened by the user's last
message (else the message fails with Twilio error 63016).

What is checked here, before any request (Twilio's rules, see its "Using variables with Content
Templates" page and errors 21654, 21655, 21656):

- the SID is ``HX`` + 32 hex characters;
- variables only with a SID (21654); at most 100 of them; each key a positive integer (``"1"``) or a name
  (letters, digits and ``_``, starting with a letter), at most 16 characters, no spaces; each value a
  non-empty string (null or empty is 21656) of at most 1600 characters;
- no ``Body`` or media with a template: Twilio sends the template's content, and its 63016 page says to
  leave ``Body`` and ``MediaUrl`` out.

Variables are sent as canonical JSON (keys sorted, no spaces), so the same template and values always
give the same text, and the same digest (:func:`content_digest`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_twilio_sms.errors import InvalidMessageError

CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")
VARIABLE_KEY = re.compile(r"[1-9][0-9]{0,15}|[A-Za-z][A-Za-z0-9_]{0,15}")
MAX_VARIABLES = 100
MAX_VARIABLE_CHARS = 1600


def validate_content_sid(content_sid: object) -> str:
    """The SID stripped, or :class:`InvalidMessageError` saying what a Content SID looks like."""
    text = str(content_sid or "").strip()
    if not CONTENT_SID.fullmatch(text):
        raise InvalidMessageError(
            f"content_sid {text[:6]!r}... is not a Content template SID (HX followed by 32 hex characters, "
            "Twilio error 21655): copy it from the Content Template Builder in Twilio's console")
    return text


def content_variables_json(variables: Mapping[str, Any] | str | None) -> str | None:
    """``ContentVariables`` as Twilio wants it: a JSON object of string keys to string values, canonical.

    Takes a mapping or a JSON string (as a rendered template field may be). None or empty: None (the
    template's own sample values are used). Raises :class:`InvalidMessageError` naming the key at fault
    (never a value, which may be personal data).
    """
    if variables is None or variables == "" or variables == {}:
        return None
    if isinstance(variables, str):
        try:
            variables = json.loads(variables)
        except ValueError:
            raise InvalidMessageError("content_variables is not valid JSON (Twilio error 21656): give a dict "
                                      'such as {"1": "12/1", "2": "3pm"}') from None
    if not isinstance(variables, Mapping):
        raise InvalidMessageError(f"content_variables is a {type(variables).__name__}, not a mapping of "
                                  "placeholder to value (Twilio error 21656): give a dict such as "
                                  '{"1": "Ada"}')
    if len(variables) > MAX_VARIABLES:
        raise InvalidMessageError(f"content_variables has {len(variables)} entries; a template has at most "
                                  f"{MAX_VARIABLES} variables")
    checked: dict[str, str] = {}
    for key, value in variables.items():
        name: object = key
        if isinstance(name, int) and not isinstance(name, bool):
            name = str(name)  # {1: "x"} is {"1": "x"}, as JSON would write it
        if not isinstance(name, str) or not VARIABLE_KEY.fullmatch(name):
            shown = repr(name)[:24]
            raise InvalidMessageError(
                f"content_variables key {shown} is not a template variable: use a positive number (\"1\") or "
                "a name of letters, digits and _ starting with a letter, at most 16 characters, no spaces")
        if not isinstance(value, str):
            raise InvalidMessageError(
                f"content_variables[{name!r}] is a {type(value).__name__}; Twilio wants every value as a "
                "string (error 21656): convert it, e.g. str(value)")
        if not value.strip():
            raise InvalidMessageError(f"content_variables[{name!r}] is empty; Twilio refuses empty values "
                                      "(error 21656): leave the key out to use the template's sample value")
        if len(value) > MAX_VARIABLE_CHARS:
            raise InvalidMessageError(f"content_variables[{name!r}] is {len(value)} characters; Twilio takes "
                                      f"at most {MAX_VARIABLE_CHARS}")
        checked[name] = value
    return json.dumps(checked, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_template_message(content_sid: str | None, content_variables: str | None, body: str | None,
                           media_urls: list[str]) -> None:
    """Refuse variables without a template (21654), and a body or media alongside one."""
    if content_variables and not content_sid:
        raise InvalidMessageError("content_variables was given without content_sid (Twilio error 21654): "
                                  "give the template's content_sid too, or drop the variables")
    if content_sid and (body or media_urls):
        what = "a body" if body else "media_url"
        raise InvalidMessageError(f"content_sid was given with {what}: a Content template carries its own "
                                  "text and media; leave body and media_url out (put the values in "
                                  "content_variables)")


def validate_content(
    body: str | None, media_urls: list[str], content_sid: object = None,
    content_variables: Mapping[str, Any] | str | None = None,
) -> tuple[str | None, str | None]:
    """Check what a message says before anything is sent: a Content template (its SID, its variables, and
    neither body nor media beside it), else the body and media as :func:`.segments.validate_message` does.
    Returns the template's SID and canonical variables (JSON), both None for a body.
    """
    from airflow_provider_twilio_sms.segments import validate_message

    sid = validate_content_sid(content_sid) if content_sid else None
    variables = content_variables_json(content_variables)
    check_template_message(sid, variables, body, media_urls)
    if not sid:
        validate_message(body, media_urls)
    return sid, variables


def content_digest(body: str | None, content_sid: str | None = None,
                   content_variables: str | None = None) -> str:
    """SHA-256 (hex) of what a message says: its body, or its template and canonical variables.

    A body alone hashes exactly as before templates existed (the digest of the text), so stored digests keep
    matching. A template hashes its SID and variables, so two sends of one template with other values differ.
    """
    if not content_sid:
        return hashlib.sha256((body or "").encode("utf-8")).hexdigest()
    text = "content\x1f" + content_sid + "\x1f" + (content_variables or "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
