"""Rate limits per team pool: parsing ``"100/1h"``, choosing the pool, choosing the limit.

Airflow pools cap how many tasks run at once; they have no notion of "at most N per hour", which is
what carriers and Twilio's throughput rules need. The limit is enforced in the store
(:meth:`SmsStore.acquire_rate_slot`), exactly and across every worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_provider_twilio_sms import config

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "day": 86400}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` sends (or segments) per ``window_seconds``, parsed from ``"100/1h"``."""

    count: int
    window_seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.window_seconds}s"


def parse_rate_limit(spec: str, *, source: str = "rate_limit") -> RateLimit:
    """``"100/1h"`` -> RateLimit(100, 3600). Accepts s, m, h, d (``"10/30s"``, ``"5/m"``)."""
    match = _SPEC.match(str(spec))
    unit = _UNITS.get(match.group(3).lower()) if match else None
    if not match or unit is None or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ValueError(
            f"{source}: {spec!r} is not a rate limit; write COUNT/WINDOW such as 100/1h, 5/1m or 10/30s "
            "(units s, m, h, d; count at least 1)"
        )
    return RateLimit(int(match.group(1)), int(match.group(2) or 1) * unit)


def team_pool(team: str | None, pool: str | None) -> str:
    """The team pool a send counts against: the DAG's team under multi-team, else the Airflow pool."""
    if team:
        return f"team:{team}"
    return f"pool:{pool or 'default_pool'}"


def resolve_rate_limit(operator_limit: str | None, connection_limit: str | None,
                       team: str | None, pool: str | None) -> RateLimit | None:
    """The operator's limit, else the connection's, else ``[twilio_sms] rate_limits`` for the team or pool."""
    if operator_limit:
        return parse_rate_limit(operator_limit, source="SendSmsOperator rate_limit")
    if connection_limit:
        return parse_rate_limit(connection_limit, source="connection extra rate_limit")
    configured = config.get_json_object("rate_limits")
    for name in (team, pool):
        if name and configured.get(name):
            return parse_rate_limit(configured[name], source=f"[twilio_sms] rate_limits[{name!r}]")
    return None
