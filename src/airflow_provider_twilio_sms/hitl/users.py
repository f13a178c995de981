"""Which Airflow user a phone number answers for.

Two sources, checked in this order for a reply: the DAG author's ``users=`` on ``SmsHitlNotifier`` (kept
with the request in the store), then the admin's ``[twilio_sms] hitl_users`` (read by the webhook). Both
are ``{number: user}`` where ``user`` is an Airflow user id (``"alice"``; its name is the id) or
``{"id": "7", "name": "Alice"}`` — the id is what Airflow's ``assigned_users`` and auth manager know the
user by. Numbers are validated and normalised to E.164 (the connection's ``default_region`` reads
national ones), so ``"(415) 555-0123"`` and ``"+14155550123"`` are one key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from airflow_provider_twilio_sms.errors import InvalidMessageError
from airflow_provider_twilio_sms.privacy import mask_number, safe_for_log

CONFIG_OPTION = "hitl_users"
_EXAMPLE = '{"+14155550123": "alice"} or {"+14155550123": {"id": "7", "name": "Alice"}}'


@dataclass(frozen=True)
class HitlUser:
    """An Airflow user as Airflow's HITL API records it (``responded_by``: ``{"id", "name"}``)."""

    id: str
    name: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


def _user(value: object, number: str, source: str) -> HitlUser:
    where = f"{source}: the user of {mask_number(number)}"
    if isinstance(value, str) and value.strip():
        return HitlUser(value.strip(), value.strip())
    if isinstance(value, Mapping):
        user_id, name = value.get("id"), value.get("name", value.get("id"))
        if isinstance(user_id, (str, int)) and str(user_id).strip() and isinstance(name, (str, int)):
            unknown = set(value) - {"id", "name"}
            if unknown:
                keys = sorted(safe_for_log(k, 30) for k in unknown)
                raise InvalidMessageError(f"{where} has unknown keys {keys}:"
                                          f" give only id and name, e.g. {_EXAMPLE}")
            return HitlUser(str(user_id).strip(), str(name).strip() or str(user_id).strip())
    raise InvalidMessageError(f"{where} is neither an Airflow user id nor {{\"id\", \"name\"}}: "
                              f"write it like {_EXAMPLE}")


def parse_users(mapping: object, default_region: str | None = None, *,
                source: str = "users") -> dict[str, HitlUser]:
    """``{number: user}`` validated, keys in E.164; raises :class:`InvalidMessageError` naming the (masked)
    number and the fix. ``mapping`` may be a JSON object text (as config options are written).
    """
    from airflow_provider_twilio_sms.phone import normalize_number

    if mapping is None or mapping == "":
        return {}
    if isinstance(mapping, str):
        try:
            mapping = json.loads(mapping)
        except json.JSONDecodeError as err:
            raise InvalidMessageError(f"{source} is not valid JSON ({err.msg}): "
                                      f"write it like {_EXAMPLE}") from None
    if not isinstance(mapping, Mapping):
        raise InvalidMessageError(f"{source} must map phone numbers to Airflow users, like {_EXAMPLE}")
    users: dict[str, HitlUser] = {}
    for raw_number, value in mapping.items():
        try:
            number = normalize_number(raw_number, default_region)
        except InvalidMessageError as err:
            raise InvalidMessageError(f"{source}: {err}") from None
        user = _user(value, number, source)
        if users.get(number, user) != user:
            raise InvalidMessageError(f"{source} maps {mask_number(number)} twice (written two ways) to "
                                      "different users: keep one entry per number")
        users[number] = user
    return users


def admin_users(default_region: str | None = None) -> dict[str, HitlUser]:
    """``[twilio_sms] hitl_users`` (env ``AIRFLOW__TWILIO_SMS__HITL_USERS``), validated."""
    from airflow_provider_twilio_sms import config

    return parse_users(config.get(CONFIG_OPTION) or "{}", default_region,
                       source=f"[twilio_sms] {CONFIG_OPTION}")


def encode_users(users: Mapping[str, HitlUser]) -> dict[str, dict[str, str]]:
    """How the store keeps a mapping (JSON): ``{number: {"id", "name"}}``."""
    return {number: user.as_dict() for number, user in users.items()}


def decode_users(stored: Mapping[str, Mapping[str, str]]) -> dict[str, HitlUser]:
    return {number: HitlUser(str(u["id"]), str(u.get("name") or u["id"])) for number, u in stored.items()}
