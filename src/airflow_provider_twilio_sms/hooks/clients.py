"""One twilio-python client per connection and process, so that consecutive tasks reuse its HTTP session.

A task used to build a client of its own: about 0.05 ms, plus a new TCP (and TLS) connection to Twilio on
its first request, about 1 ms on loopback and a round trip or more to Twilio. The client, and the
keep-alive connections of its session's pool, now outlive the hook: the next hook of the same connection
in the same process gets the same client.

- Keyed by connection id and a fingerprint of what the client is made of (credentials, account, region,
  edge, base URL, timeout, the environment's proxy and CA settings): when any of these changes (a rotated
  Auth Token or API key), the next hook gets a new client, and the old one is dropped from the cache (a
  hook still holding it finishes with it).
- A forked child (a Celery prefork worker, an executor that forks per task) never uses its parent's clients:
  their pooled sockets are shared with the parent, and two processes talking on one connection would read
  each other's answers. The child starts with an empty cache; the parent's clients stay referenced, never
  closed there (closing would not reach the parent's socket, but a TLS close could end its session).
- Thread-safe: the hook's HTTP client keeps each thread's last response headers apart.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_clients: dict[str, tuple[str, Any]] = {}  # connection id -> (fingerprint, client)
_lock = threading.Lock()
_inherited: list[Any] = []  # a forked child's parent's clients: never used, never closed


def fingerprint(parts: Iterable[object]) -> str:
    """A digest of ``parts`` (secrets among them): it tells whether a client was built from the same values
    without keeping or showing them.
    """
    digest = hashlib.sha256(b"twilio_sms client v1")
    for part in parts:
        digest.update(b"\x00" + repr(part).encode())
    return digest.hexdigest()


def shared_client(conn_id: str, made_of: str, build: Callable[[], T]) -> T:
    """This process's client for ``conn_id`` if it was built from the values whose :func:`fingerprint` is
    ``made_of``; else ``build()``, kept for the next caller in place of the connection's previous client.
    """
    with _lock:
        found = _clients.get(conn_id)
        if found is not None and found[0] == made_of:
            return found[1]
    client = build()  # outside the lock: a slow build (imports) does not hold up other connections
    with _lock:
        found = _clients.get(conn_id)
        if found is not None and found[0] == made_of:
            return found[1]  # another thread built it meanwhile: one client per connection
        _clients[conn_id] = (made_of, client)
    return client


def forget_clients() -> None:
    """Drop every kept client (tests; a hook built afterwards gets a new one)."""
    with _lock:
        _clients.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _inherited.extend(client for _, client in _clients.values())
    _clients.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
