"""How long the store keeps what it records: purge ages such as ``30d``, and ``[twilio_sms] retention_days``.

The deletes themselves are :meth:`SmsStore.purge <airflow_provider_twilio_sms.store.api.SmsStore.purge>`
and :meth:`SmsStore.forget_number <airflow_provider_twilio_sms.store.api.SmsStore.forget_number>`.
"""

from __future__ import annotations

import re
from datetime import timedelta

from airflow_provider_twilio_sms import config
from airflow_provider_twilio_sms.errors import ConnectionConfigError

AGE_FORMAT = "a whole number followed by d (days), h (hours) or m (minutes), e.g. 30d, 12h or 90m"
_AGE = re.compile(r"(\d{1,6})\s*([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_age(text: str) -> timedelta:
    """``"30d"`` -> 30 days, ``"12h"``, ``"90m"``; raises ValueError naming the value and the format."""
    match = _AGE.fullmatch(str(text).strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not an age: write {AGE_FORMAT} (more than zero)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def format_age(age: timedelta) -> str:
    """The age as :func:`parse_age` reads it, in its largest whole unit (``30d``, ``36h``, ``90m``)."""
    minutes = age // timedelta(minutes=1)
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def configured_age() -> timedelta:
    """``[twilio_sms] retention_days`` as a timedelta: the purge's default age."""
    days = config.get_int("retention_days")
    if days < 1:
        raise ConnectionConfigError(f"[{config.SECTION}]", "retention_days",
                                    f"{days} days keeps nothing",
                                    "Set AIRFLOW__TWILIO_SMS__RETENTION_DAYS to 1 or more (the default is "
                                    f"{config.DEFAULTS['retention_days']})")
    return timedelta(days=days)
