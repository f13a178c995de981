"""Reading the ``[twilio_sms]`` section of Airflow's config (env vars, ``_cmd`` and ``_secret`` included).

Defaults here match the provider info's ``config`` section, so a value is right even before Airflow
has loaded provider configuration.
"""

from __future__ import annotations

import json

from airflow_provider_twilio_sms.errors import ConnectionConfigError

SECTION = "twilio_sms"
DEFAULTS = {
    "store_conn_id": "twilio_sms_store_default",
    "webhook_enabled": "True",
    "webhook_max_body_bytes": "65536",
    "rate_limits": "{}",
    "send_lease_seconds": "120",
    "store_connect_timeout_seconds": "3",
    "store_statement_timeout_seconds": "5",
    "store_keepalives_idle_seconds": "10",
    "store_keepalives_interval_seconds": "3",
    "store_keepalives_count": "3",
    "store_sqlite_busy_timeout_seconds": "30",
    "webhook_store_deadline_seconds": "10",
    "retention_days": "30",
    "store_outbound_bodies": "False",
    "hitl_users": "{}",
    "cancel_scheduled_when_marked_failed": "True",
}


def _conf():
    from airflow.configuration import conf

    return conf


def get(option: str, fallback: str | None = None) -> str | None:
    return _conf().get(SECTION, option, fallback=DEFAULTS.get(option, fallback))


def get_int(option: str) -> int:
    value = get(option)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConnectionConfigError(f"[{SECTION}]", option, f"{value!r} is not a whole number",
                                    f"Set AIRFLOW__TWILIO_SMS__{option.upper()} to an integer") from None


def get_float(option: str, minimum: float | None = None) -> float:
    """A number of the section (seconds, say), at least ``minimum``."""
    value = get(option)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = None
    if number is None or number != number or (minimum is not None and number < minimum):
        at_least = f" of at least {minimum:g}" if minimum is not None else ""
        raise ConnectionConfigError(f"[{SECTION}]", option, f"{value!r} is not a number{at_least}",
                                    f"Set AIRFLOW__TWILIO_SMS__{option.upper()} to a number{at_least} "
                                    f"(the default is {DEFAULTS.get(option)})")
    return number


def get_bool(option: str) -> bool:
    return str(get(option)).strip().lower() in ("1", "true", "yes", "on")


def get_json_object(option: str) -> dict:
    raw = get(option) or "{}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ConnectionConfigError(f"[{SECTION}]", option, f"is not valid JSON ({err.msg})",
                                    'Write a JSON object, e.g. {"team_a": "100/1h"}') from None
    if not isinstance(value, dict):
        raise ConnectionConfigError(f"[{SECTION}]", option, "is not a JSON object",
                                    'Write a JSON object, e.g. {"team_a": "100/1h"}')
    return value


def airflow_multi_team() -> bool:
    """Whether Airflow runs in multi-team mode (``[core] multi_team``, Airflow 3.2+)."""
    return str(_conf().get("core", "multi_team", fallback="False")).strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def team_of(context) -> str | None:
    """The DAG's team when Airflow runs in multi-team mode (3.2+), else None: what a send's idempotency
    scope and rate-limit pool, and a sensor's lookup, are per.
    """
    if not airflow_multi_team():
        return None
    dag_run = context.get("dag_run")
    return getattr(dag_run, "team_name", None) or None
