"""The ``twilio_sms`` connection a webhook URL names, read from Airflow's secrets and cached briefly.

The webhook runs only in server processes (the api-server, or ``airflow twilio-sms webhook serve``), never
in a task, so it reads connections as the api-server's own code does:
``Connection.get_connection_from_secrets`` walks the configured secrets backend, ``AIRFLOW_CONN_*``
variables and the metadata database, whatever the process announced itself as. With multi-team on, a
connection owned by a team is only visible when asked for with that team, so the owning team is read
from the metadata database first (and the webhook's inbound messages belong to it).

Settings are cached per conn_id for :data:`SETTINGS_TTL_SECONDS`, unknown ids included, so the hot path
never waits on the secrets backend; the cache is bounded so random ids cannot grow it without end.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_twilio_sms.privacy import safe_for_log

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

log = logging.getLogger(__name__)

SETTINGS_TTL_SECONDS = 30.0
MAX_CACHED_CONNECTIONS = 512
# What the webhook accepts as a conn_id in its URL: Airflow's usual ids, nothing that needs escaping
# (the operator puts the id into the callback URL as it is, and Twilio signs that exact URL).
CONN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")


@dataclass(frozen=True)
class WebhookConnection:
    """A usable ``twilio_sms`` connection: its settings and the Airflow team that owns it (if any)."""

    settings: TwilioConnectionSettings
    team: str | None = None


class ConnectionUnavailable(Exception):
    """The connection exists, or may exist, but cannot be used right now: Twilio must retry (503)."""


def load_connection(conn_id: str) -> WebhookConnection | None:
    """The connection behind ``conn_id``, or None when there is no usable ``twilio_sms`` connection.

    A connection that exists but cannot verify webhooks (wrong type, bad Account SID, no token) is logged
    once per cache period, saying what to fix, and treated as unknown (404: Twilio drops the request).
    What a retry can cure raises instead, and the route answers 503 so that Twilio retries: a secret that
    does not decrypt (its key was removed from ``[twilio_sms] encryption_keys`` too early in a rotation),
    a secrets backend or metadata database that cannot be reached (:class:`ConnectionUnavailable`), and
    any unexpected failure.
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from airflow_provider_twilio_sms.connection import CONN_TYPE, TwilioConnectionSettings
    from airflow_provider_twilio_sms.errors import EncryptionError, TwilioSmsError

    team = _owning_team(conn_id)
    try:
        conn = Connection.get_connection_from_secrets(conn_id, team_name=team)
    except AirflowNotFoundException:
        # Airflow answers "not found" also when a backend failed (it skips backends that raise): unknown
        # only if every backend answered.
        _confirm_not_found(conn_id, team)
        return None
    except PermissionError:  # the secrets backend denies this id (AirflowSecretsBackendAccessDenied)
        log.error("Webhook connection %s: the secrets backend denied access", safe_for_log(conn_id, 60))
        return None
    conn_type = (conn.conn_type or "").replace("-", "_")
    if conn_type != CONN_TYPE:
        log.error("Webhook connection %s has type %s, not %s: its webhooks are refused (404)",
                  safe_for_log(conn_id, 60), safe_for_log(conn.conn_type, 40), CONN_TYPE)
        return None
    try:
        settings = TwilioConnectionSettings.from_connection(conn)
    except EncryptionError as err:  # messages name the connection, field and key id, never a secret
        log.error("Webhook connection %s: a secret does not decrypt, so its webhooks get 503 (Twilio "
                  "retries) until it does: %s", safe_for_log(conn_id, 60), safe_for_log(err, 400))
        raise
    except TwilioSmsError as err:  # ConnectionConfigError: messages carry no secret
        log.error("Webhook connection %s cannot verify webhooks, which are refused (404): %s",
                  safe_for_log(conn_id, 60), safe_for_log(err, 400))
        return None
    if not settings.webhook_tokens and not settings.webhook_signing_key_secret:
        log.error("Webhook connection %s has no Auth Token (password) nor webhook signing key, so no Twilio "
                  "signature can be verified: its webhooks are refused (404)", safe_for_log(conn_id, 60))
        return None
    return WebhookConnection(settings=settings, team=team)


def _confirm_not_found(conn_id: str, team: str | None) -> None:
    """Ask each configured secrets backend for ``conn_id`` again; raise :class:`ConnectionUnavailable` if
    one fails (the metadata database down, a vault unreachable) or now finds it.
    """
    import inspect

    from airflow.configuration import ensure_secrets_loaded

    for backend in ensure_secrets_loaded():
        name = type(backend).__name__
        lookup = backend.get_connection
        kwargs = {"team_name": team} if "team_name" in inspect.signature(lookup).parameters else {}
        try:
            found = lookup(conn_id=conn_id, **kwargs)
        except PermissionError:  # the backend denies this id: an authoritative answer
            return
        except Exception as err:
            raise ConnectionUnavailable(f"the secrets backend {name} failed ({type(err).__name__})") from err
        if found is not None:
            raise ConnectionUnavailable(f"the secrets backend {name} found the connection only when asked "
                                        "again")


def _owning_team(conn_id: str) -> str | None:
    """The team owning the connection: multi-team only, and None for connections outside the metadata DB."""
    from airflow_provider_twilio_sms import config

    if not config.airflow_multi_team():
        return None
    try:
        from airflow.models.connection import Connection

        return Connection.get_team_name(conn_id) or None
    except Exception as err:  # noqa: BLE001 - no metadata DB here (standalone): no team
        log.debug("No team for connection %s: %s", safe_for_log(conn_id, 60), type(err).__name__)
        return None


class ConnectionCache:
    """Connections per conn_id for ``ttl`` seconds (a missing one too), at most ``max_entries``."""

    def __init__(self, ttl: float = SETTINGS_TTL_SECONDS, max_entries: int = MAX_CACHED_CONNECTIONS,
                 loader=load_connection, clock=time.monotonic):
        self.ttl, self.max_entries, self._loader, self._clock = ttl, max_entries, loader, clock
        self._entries: OrderedDict[str, tuple[float, WebhookConnection | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one lookup per conn_id at a time

    def cached(self, conn_id: str) -> tuple[bool, WebhookConnection | None]:
        """``(True, connection)`` when a fresh entry exists: no lookup, no thread hop."""
        entry = self._entries.get(conn_id)
        if entry is not None and entry[0] > self._clock():
            return True, entry[1]
        return False, None

    def get(self, conn_id: str) -> WebhookConnection | None:
        """The connection, looked up when not cached (blocking: call from a worker thread).

        Concurrent requests that miss the same conn_id wait for one lookup instead of each asking the
        secrets backend (a burst of callbacks when the entry expires). A lookup that raises is not
        cached: the next request tries again.
        """
        hit, found = self.cached(conn_id)
        if hit:
            return found
        with self._lock:
            loading = self._loading.setdefault(conn_id, threading.Lock())
        with loading:
            hit, found = self.cached(conn_id)  # loaded by the request this one waited for
            if hit:
                return found
            try:
                found = self._loader(conn_id)
                with self._lock:
                    self._entries[conn_id] = (self._clock() + self.ttl, found)
                    self._entries.move_to_end(conn_id)
                    while len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            finally:
                with self._lock:
                    self._loading.pop(conn_id, None)
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
