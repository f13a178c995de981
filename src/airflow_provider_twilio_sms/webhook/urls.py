"""Where Twilio reaches the webhooks: the path under the api-server (or the standalone app), and the
``StatusCallback`` URL a send gives Twilio. Light to import: DAG files import it through the operator.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

URL_PREFIX = "/twilio_sms"
# Twilio's webhook connection overrides (URL fragment; Twilio neither sends nor signs it): retry up to 5 times
# (Twilio's maximum) on a failed connect, a read timeout or a 5xx. Without them Twilio retries only a failed
# connect, once, and drops the callback the webhook answered 503 (store unavailable) to have it retried.
DEFAULT_CONNECTION_OVERRIDES = "rc=5&rp=ct,rt,5xx"


def webhook_path(conn_id: str, kind: str) -> str:
    """The path of one connection's webhook (``kind``: ``status`` or ``inbound``)."""
    return f"{URL_PREFIX}/webhooks/{conn_id}/{kind}"


def status_callback_url(settings, conn_id: str, key: str, url: str | None = None) -> str | None:
    """The ``StatusCallback`` for one send: ``url`` (else the connection's ``webhook_base_url`` and the
    webhook path, with :data:`DEFAULT_CONNECTION_OVERRIDES` as its fragment), with the idempotency key's
    SHA-256 (``ik_sha256``) in its query.

    The webhook links a callback to its message by that key (among the messages of the connection that
    verifies the callback) when the send's answer was lost, so a user-supplied URL gets it too; the URL's
    own query and fragment (Twilio's ``#rc=`` connection overrides) are kept as they are. No team goes into
    the URL: the webhook takes it from the stored message. The digest, not the key: a key may be of any
    length, Twilio takes URLs of at most 4000 characters. None when there is neither a URL nor a
    ``webhook_base_url``.
    """
    from airflow_provider_twilio_sms.store.claims import key_digest

    if not url:
        if not settings.webhook_base_url:
            return None
        url = (settings.webhook_base_url.rstrip("/") + webhook_path(conn_id, "status")
               + "#" + DEFAULT_CONNECTION_OVERRIDES)
    parts = urlsplit(url)
    ours = ("ik", "ik_sha256", "team")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    query.append(("ik_sha256", key_digest(key)))
    return urlunsplit(parts._replace(query=urlencode(query)))
