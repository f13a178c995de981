"""Faults on demand: what the stand-in does instead of answering normally, and to which requests.

Kinds (what a client must survive when talking to Twilio):

- ``429``: 429 with code 20429 and a ``Retry-After`` header; nothing is created.
- ``500_before`` / ``503_before``: a 5xx before the request is accepted; nothing is created.
- ``500_after``: the message is created (and goes on to be delivered) but the client sees a 500.
- ``slow``: the answer comes after ``delay`` seconds (past the client's timeout); the message is created.
- ``reset_before`` / ``reset_after``: the connection is closed with a TCP reset and no HTTP answer,
  before or after the message is created.

A fault is scoped by ``to`` (a recipient number), ``account`` (an Account SID) and ``endpoint``
(``create`` by default; ``fetch``, ``list``, ``account`` or ``any``), and applies to the next ``count``
matching requests (``None``: every one until cleared).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("429", "500_before", "503_before", "500_after", "slow", "reset_before", "reset_after")
ENDPOINTS = ("create", "fetch", "list", "account", "any")
MAX_DELAY = 600.0
FIELDS = ("to", "account", "endpoint", "count", "retry_after", "delay")


@dataclass
class Fault:
    """A scripted failure: which answer (``kind``), for which requests (``endpoint``, ``account``,
    ``to``), and how many times (``count``; None for every request).
    """

    kind: str
    to: str | None = None
    account: str | None = None
    endpoint: str = "create"
    count: int | None = 1
    retry_after: int = 1
    delay: float = 2.0
    id: int = field(default=0)
    hits: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; one of {', '.join(ENDPOINTS)}")
        if self.count is not None and (not isinstance(self.count, int) or isinstance(self.count, bool)
                                       or self.count < 1):
            raise ValueError(f"count must be a positive integer or null (every request), not {self.count!r}")
        if not isinstance(self.retry_after, int) or isinstance(self.retry_after, bool) \
                or self.retry_after < 0:
            raise ValueError(f"retry_after must be a whole number of seconds, not {self.retry_after!r}")
        if not isinstance(self.delay, (int, float)) or isinstance(self.delay, bool) \
                or not 0 <= self.delay <= MAX_DELAY:
            raise ValueError(f"delay must be between 0 and {MAX_DELAY:g} seconds, not {self.delay!r}")

    def matches(self, endpoint: str, account: str, to: str | None) -> bool:
        return ((self.endpoint == "any" or self.endpoint == endpoint)
                and (self.account is None or self.account == account)
                and (self.to is None or self.to == to))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """The faults in force, first added first served. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, kind: str, **scope: Any) -> Fault:
        unknown = set(scope) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        fault = Fault(kind, **scope)
        with self._lock:
            fault.id = next(self._ids)
            self._faults.append(fault)
        return fault

    def take(self, endpoint: str, account: str, to: str | None) -> Fault | None:
        """The fault that applies to this request, counting it as used; None for a normal answer."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(endpoint, account, to):
                    fault.hits += 1
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) < before

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._faults]
