"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Everything the UI needs for the connection form is declarative here (``conn-fields`` and
``ui-field-behaviour``): Airflow 3.2+ reads these without importing the hook.
"""

from __future__ import annotations

from airflow_provider_twilio_sms import __version__


def _text(label: str, description: str, *, secret: bool = False, enum: list[str] | None = None) -> dict:
    schema: dict = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"
    if enum:
        schema["enum"] = [*enum, None]
    return {"label": label, "description": description, "schema": schema}


def _option(description: str, default: str | None, example: str | None = None, *, type_: str = "string",
            sensitive: bool = False) -> dict:
    option: dict = {"description": description, "version_added": "0.1.0", "type": type_, "example": example,
                    "default": default}
    if sensitive:
        option["sensitive"] = True
    return option


CONN_FIELDS = {
    "from_number": _text("From number", "Your Twilio number in E.164 (+14155550123), a short code, an "
                         "alphanumeric sender ID, or a WhatsApp sender (whatsapp:+14155550123). Needed "
                         "unless a Messaging Service SID is set."),
    "messaging_service_sid": _text("Messaging Service SID", "MG followed by 32 hex characters; Twilio then "
                                   "picks the sender from the service's pool."),
    "api_key_sid": _text("API key SID", "SK followed by 32 hex characters: an API key to use instead of the "
                         "Auth Token (recommended; revocable)."),
    "api_key_secret": _text("API key secret", "The API key's secret. May be encrypted (enc:v1:...).",
                            secret=True),
    "region": _text("Region", "Twilio region to send through, e.g. ie1 or au1; empty for the default (us1)."),
    "edge": _text("Edge", "Twilio edge location, e.g. dublin or sydney; empty for the default."),
    "default_region": _text("Default country", "ISO country code (e.g. US, GB) for numbers written without "
                            "a leading +."),
    "webhook_base_url": _text("Webhook base URL", "Public https URL of this Airflow (or the standalone "
                              "webhook app) as Twilio reaches it, e.g. https://airflow.example.com; status "
                              "callbacks go to <this>/twilio_sms/webhooks/<conn_id>/status."),
    "secondary_auth_token": _text("Secondary Auth Token", "During an Auth Token rotation: the other token, "
                                  "also accepted for webhook signatures. May be encrypted (enc:v1:...).",
                                  secret=True),
    "webhook_signing_key_sid": _text("Webhook signing key SID", "For Twilio's HMAC-SHA256 webhook "
                                     "signatures with shared keys: the SID of the signing key Twilio names "
                                     "in X-Twilio-Webhooks-Signature-Settings. Empty: only "
                                     "X-Twilio-Signature (HMAC-SHA1 with the Auth Token) is checked."),
    "webhook_signing_key_secret": _text("Webhook signing key secret", "The shared signing key's secret "
                                        "(needed with the signing key SID). May be encrypted (enc:v1:...).",
                                        secret=True),
    "rate_limit": _text("Rate limit", "Most messages per window for the sending team pool, e.g. 100/1h, "
                        "5/1m or 10/30s. Empty: no limit unless [twilio_sms] rate_limits sets one."),
    "api_base_url": _text("API base URL", "Override of https://api.twilio.com, for the local stand-in "
                          "(http://127.0.0.1:8099) or contract tests. Leave empty in production."),
}

CONFIG = {
    "twilio_sms": {
        "description": "Twilio SMS provider: encryption of connection secrets, the message store, "
                       "webhooks and rate limits.",
        "options": {
            "encryption_keys": _option(
                "JSON object of key id to base64-encoded 32-byte AES-256 key, used to decrypt connection "
                "extras written as enc:v1:<key-id>:<base64>. Keep old keys here until "
                "`airflow twilio-sms rotate-keys` has re-encrypted everything. Generate one with "
                "`airflow twilio-sms generate-key`.",
                None, '{"k2": "<base64 of 32 bytes>", "k1": "<base64 of 32 bytes>"}', sensitive=True),
            "active_key_id": _option("Id of the key in encryption_keys that encrypts new values.",
                                     None, "k2"),
            "store_conn_id": _option(
                "Airflow connection whose SQLAlchemy URL holds the provider's tables (twilio_sms_*). "
                "Workers, sensors and triggers reach the store only through it. Its extra "
                "`sqlalchemy_url`, or its URI (postgresql://, sqlite:///...), gives the URL.",
                "twilio_sms_store_default", "twilio_sms_store_default"),
            "webhook_enabled": _option("Mount the webhook app at /twilio_sms in the api-server.", "True",
                                       "False", type_="boolean"),
            "webhook_max_body_bytes": _option("Largest webhook request body accepted (bytes); larger "
                                              "requests get 413.", "65536", "65536", type_="integer"),
            "webhook_api_token": _option(
                "Bearer token required by the read API of the standalone webhook app (not used inside "
                "the api-server, which uses Airflow's own authentication).", None, None, sensitive=True),
            "rate_limits": _option(
                'JSON object of team or pool name to a rate limit such as "100/1h", used when neither the '
                "operator nor the connection sets one. Empty object: no limit.",
                # Airflow formats defaults with str.format, so the empty JSON object is written doubled.
                "{{}}", '{"sms_team_qa": "100/1h", "growth": "5/1m"}'),
            "send_lease_seconds": _option(
                "How long a send attempt's claim on its idempotency key is held before another attempt "
                "may reconcile and take it over.", "120", "120", type_="integer"),
            "store_connect_timeout_seconds": _option(
                "PostgreSQL store: most seconds to open a connection (libpq connect_timeout, whole seconds, "
                "at least 2), and to wait for a free pooled one.", "3", "3", type_="float"),
            "store_statement_timeout_seconds": _option(
                "PostgreSQL store: the server cancels any statement of the store's sessions running longer "
                "(statement_timeout, set at connect through libpq's options). Keep it below "
                "webhook_store_deadline_seconds; 0 turns it off (PgBouncer refuses the options startup "
                "parameter unless told to ignore it: set 0 there and a timeout on the role).", "5", "5",
                type_="float"),
            "store_keepalives_idle_seconds": _option(
                "PostgreSQL store: seconds of silence on a connection before TCP keepalive probes start.",
                "10", "10", type_="float"),
            "store_keepalives_interval_seconds": _option(
                "PostgreSQL store: seconds between TCP keepalive probes.", "3", "3", type_="float"),
            "store_keepalives_count": _option(
                "PostgreSQL store: unanswered keepalive probes after which the connection is dropped. Data "
                "sent and not acknowledged for idle + interval x count seconds drops it too "
                "(tcp_user_timeout).", "3", "3", type_="integer"),
            "store_sqlite_busy_timeout_seconds": _option(
                "SQLite store: most seconds a writer waits for the database's write lock (busy timeout); "
                "a store call with a shorter deadline waits only until its deadline.", "30", "30",
                type_="float"),
            "webhook_store_deadline_seconds": _option(
                "Most seconds a webhook request waits for the store (connection included). Past it the "
                "store call is interrupted and Twilio gets 503, so that it retries; Twilio itself waits "
                "15 s at most.", "10", "10", type_="float"),
            "retention_days": _option(
                "How many days `airflow twilio-sms db purge` (without --older-than) and the example purge "
                "DAG keep: older webhook events, finished messages, reply waits and idle rate-limit pools "
                "are deleted. A purged message's idempotency key is forgotten, so keep this far longer than "
                "any task can be retried or cleared. Opt-outs are never purged.", "30", "90",
                type_="integer"),
            "store_outbound_bodies": _option(
                "Keep the text of outbound messages in the store (shown by the read API and the Twilio SMS "
                "page to who may read the connection). Off: only its SHA-256 is kept, which is all "
                "reconciliation needs. Inbound texts are always kept (reply sensors read them) until purged.",
                "False", "True", type_="boolean"),
            "cancel_scheduled_when_marked_failed": _option(
                "A DAG run or task instance marked failed in Airflow's UI or REST API cancels its messages "
                "still scheduled at Twilio (SendSmsOperator send_at), each with the connection that sent "
                "it. A task that fails as it runs is left alone: its retry finds its message.", "True",
                "False", type_="boolean"),
            "hitl_users": _option(
                "JSON object of phone number (E.164) to the Airflow user who answers human-in-the-loop "
                "requests texted by SmsHitlNotifier from that phone: a user id, or an object with "
                "id and name. Read by the webhook after the notifier's own users= mapping.",
                "{{}}", '{"+14155550123": "alice", "+14155550124": {"id": "7", "name": "Bob"}}'),
            "hitl_api_url": _option(
                "Base URL of Airflow's api-server (e.g. https://airflow.example.com) that the standalone "
                "webhook answers human-in-the-loop replies through (PATCH .../hitlDetails). Not used inside "
                "the api-server, which calls the same code path directly.", None, None),
            "hitl_api_token": _option(
                "Token for hitl_api_url: one bearer token (responded_by is then its user), or a JSON object "
                "of Airflow user id to that user's token (responded_by names the user the number maps to).",
                None, None, sensitive=True),
        },
    }
}


RELABELING = {"login": "Account SID", "password": "Auth Token"}


def field_label(field: str) -> str | None:
    """What the connection form calls ``field`` (``login`` -> "Account SID"), or None if it has no label."""
    return RELABELING.get(field) or CONN_FIELDS.get(field, {}).get("label")


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-twilio-sms",
        "name": "Twilio SMS",
        "description": "SMS steps for Airflow pipelines through Twilio: idempotent sends, per-team rate "
                       "limits, signed webhooks and sensors on delivery statuses and replies.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Twilio SMS",
                "external-doc-url": "https://www.twilio.com/docs/messaging",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Twilio SMS",
                "python-modules": ["airflow_provider_twilio_sms.operators.sms",
                                   "airflow_provider_twilio_sms.operators.scheduled"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Twilio SMS",
                "python-modules": ["airflow_provider_twilio_sms.sensors.sms"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Twilio SMS",
                "python-modules": ["airflow_provider_twilio_sms.hooks.twilio_sms"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Twilio SMS",
                "python-modules": ["airflow_provider_twilio_sms.triggers.sms",
                                   "airflow_provider_twilio_sms.triggers.inbound_events"],
            }
        ],
        # Airflow's schema lists notifiers by class, not by module.
        "notifications": ["airflow_provider_twilio_sms.notifications.sms.SmsNotifier",
                          "airflow_provider_twilio_sms.notifications.hitl.SmsHitlNotifier",
                          "airflow_provider_twilio_sms.notifications.scheduled.CancelScheduledSmsNotifier"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_twilio_sms.hooks.twilio_sms.TwilioSmsHook",
                "hook-name": "Twilio SMS",
                "connection-type": "twilio_sms",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "extra"],
                    "relabeling": RELABELING,
                    "placeholders": {
                        "login": "AC0123456789abcdef0123456789abcdef",
                        "password": "Auth Token (leave empty when using an API key)",
                        "from_number": "+14155550123",
                        "messaging_service_sid": "MG0123456789abcdef0123456789abcdef",
                        "api_key_sid": "SK0123456789abcdef0123456789abcdef",
                        "api_key_secret": "API key secret or enc:v1:...",
                        "region": "ie1",
                        "edge": "dublin",
                        "default_region": "US",
                        "webhook_base_url": "https://airflow.example.com",
                        "secondary_auth_token": "Previous or next Auth Token",
                        "webhook_signing_key_sid": "Signing key SID from the Twilio console",
                        "webhook_signing_key_secret": "Signing key secret or enc:v1:...",
                        "rate_limit": "100/1h",
                        "api_base_url": "http://127.0.0.1:8099",
                    },
                },
            }
        ],
        # No "plugins" key: Airflow 3.3 loads the plugin from the ``airflow.plugins`` entry point
        # (pyproject.toml), and reads this key too only with ``[core] lazy_discover_providers=False``,
        # where listing it here registered it twice ("Plugin 'twilio_sms' already registered").
        "db-managers": ["airflow_provider_twilio_sms.store.db_manager.TwilioSmsDBManager"],
        "cli": ["airflow_provider_twilio_sms.cli.definition.get_cli_commands"],
        "config": CONFIG,
    }
