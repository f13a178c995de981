"""The ``airflow twilio-sms`` command group, registered through the provider info's ``cli`` key.

Only argument definitions live here; each command's code is imported lazily when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.cli.cli_config import CLICommand

_PKG = "airflow_provider_twilio_sms"


def get_cli_commands() -> list[CLICommand]:
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand, lazy_load_command

    from airflow_provider_twilio_sms.store.retention import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE

    conn_id = Arg(("--conn-id",), help="Connection id of a twilio_sms connection", required=True)
    field = Arg(("--field",), help="Name of the secret extra (api_key_secret, secondary_auth_token, ...)",
                required=True)
    key_id = Arg(("--key-id",), help="Identifier for the new key in [twilio_sms] encryption_keys",
                 default=None)
    dry_run = Arg(("--dry-run",), help="Report what would change, change nothing", action="store_true")
    store_url = Arg(("--store-url",), default=None,
                    help="SQLAlchemy URL of the store; default: the store connection, else Airflow's "
                         "metadata database")
    host = Arg(("--host",), default="127.0.0.1", help="Address to listen on")
    older_than = Arg(("--older-than",), dest="older_than", default=None,
                     help="Delete what is older than this age: a whole number and d, h or m (30d, 12h, 90m); "
                          "default: [twilio_sms] retention_days")
    batch_size = Arg(("--batch-size",), dest="batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                     help=f"Rows deleted per transaction (1 to {MAX_BATCH_SIZE}; default "
                          f"{DEFAULT_BATCH_SIZE})")
    number = Arg(("--number",), required=True, help="The phone number to erase, in E.164 (+14155550123)")

    db_commands = (
        ActionCommand(name="migrate", help="Create or upgrade the twilio_sms_* tables in the store",
                      func=lazy_load_command(f"{_PKG}.cli.db.migrate"), args=(store_url,)),
        ActionCommand(name="check", help="Exit 1 unless the store's tables are at the newest revision",
                      func=lazy_load_command(f"{_PKG}.cli.db.check"), args=(store_url,)),
        ActionCommand(name="purge",
                      help="Delete old webhook events, finished messages, reply waits and idle rate-limit "
                           "pools, in batches; prints the rows deleted per table",
                      func=lazy_load_command(f"{_PKG}.cli.retention.purge"),
                      args=(older_than, batch_size, dry_run, store_url)),
    )
    sim_action = Arg(("action",), nargs="?", default="serve", choices=("serve", "reply", "fault", "status"),
                     help="serve (default): run the stand-in; reply: send a signed inbound SMS through a "
                          "running stand-in; fault: set a fault on a running stand-in; status: what it "
                          "received and sent")
    commands = (
        ActionCommand(
            name="generate-key",
            help="Print a new random AES-256 key for the twilio_sms encryption_keys option",
            func=lazy_load_command(f"{_PKG}.cli.keys.generate_key"),
            args=(key_id,),
        ),
        ActionCommand(
            name="encrypt",
            help="Encrypt a secret extra read from stdin; prints the enc:v1 value",
            func=lazy_load_command(f"{_PKG}.cli.keys.encrypt"),
            args=(conn_id, field),
        ),
        ActionCommand(
            name="rotate-keys",
            help="Re-encrypt every encrypted extra of every twilio_sms connection with the active key",
            func=lazy_load_command(f"{_PKG}.cli.keys.rotate_keys"),
            args=(dry_run,),
        ),
        ActionCommand(
            name="forget",
            help="Erase one phone number's messages, events, reply waits and opt-out history; an opt-out "
                 "is kept (without its keyword) so that the number stays refused",
            func=lazy_load_command(f"{_PKG}.cli.retention.forget"),
            args=(number, dry_run, store_url),
        ),
        ActionCommand(
            name="cancel",
            help="Cancel scheduled messages (SendSmsOperator send_at): one by --sid or --idempotency-key, or "
                 "every one a DAG run still has scheduled (--dag-id, --run-id, --task-id); records canceled",
            func=lazy_load_command(f"{_PKG}.cli.scheduled.cancel"),
            args=(
                Arg(("--conn-id",), default="twilio_sms_default",
                    help="The twilio_sms connection the messages were sent with (default "
                         "twilio_sms_default)"),
                Arg(("--sid",), default=None, help="The message SID (SM...)"),
                Arg(("--idempotency-key",), dest="idempotency_key", default=None,
                    help="The idempotency key the message was sent with"),
                Arg(("--team",), default=None, help="The team of the DAG that sent it (multi-team only)"),
                Arg(("--dag-id",), dest="dag_id", default=None, help="Cancel this DAG run's messages"),
                Arg(("--run-id",), dest="run_id", default=None, help="... of this run"),
                Arg(("--task-id",), dest="task_id", action="append", default=None,
                    help="... of this task only; repeatable"),
                store_url,
            ),
        ),
        GroupCommand(
            name="db",
            help="Manage the provider's tables in a store outside the metadata DB",
            subcommands=db_commands,
        ),
        ActionCommand(
            name="simulator",
            help="A local stand-in for Twilio's Messages API (offline tests, no Twilio account)",
            func=lazy_load_command(f"{_PKG}.simulator.cli.run"),
            args=(
                sim_action,
                Arg(("--host",), default="127.0.0.1", help="serve: address to listen on"),
                Arg(
                    ("--port",),
                    type=int,
                    default=8099,
                    help="serve: port; other actions: the stand-in's port",
                ),
                Arg(("--url",), default=None, help="reply/fault/status: base URL of a running stand-in"),
                Arg(("--from",), dest="from_", default=None, help="reply: sender number"),
                Arg(("--to",), default=None, help="reply: our Twilio number the message goes to"),
                Arg(("--body",), default=None, help="reply: message text"),
                Arg(
                    ("--media-url",),
                    dest="media_url",
                    action="append",
                    default=None,
                    help="reply: a media URL of the inbound message (MMS); repeat for more, at most 10",
                ),
                Arg(
                    ("--inbound-url",),
                    dest="inbound_url",
                    action="append",
                    default=None,
                    help="serve: NUMBER=URL, where inbound messages to our NUMBER are posted; repeatable",
                ),
                Arg(
                    ("--callback-delay",),
                    dest="callback_delay",
                    type=float,
                    default=None,
                    help="serve: seconds between a send and its status callbacks (default 0.05)",
                ),
                Arg(("--fault",), default=None, help="fault: JSON describing the fault to inject"),
                Arg(("--control-token",), dest="control_token", default=None,
                    help="serve: let clients off this machine use the control endpoints, with this bearer "
                         "token (16+ characters; all clients must then send it); reply/fault/status: the "
                         "token to send. Default: $TWILIO_SMS_SIMULATOR_CONTROL_TOKEN, else loopback only"),
            ),
        ),
        GroupCommand(
            name="webhook",
            help="Serve the webhook app on its own, outside Airflow's api-server",
            subcommands=(
                ActionCommand(
                    name="serve",
                    help="Run the webhook app with uvicorn",
                    func=lazy_load_command(f"{_PKG}.cli.webhook.serve"),
                    args=(
                        host,
                        Arg(("--port",), type=int, default=8090, help="Port to listen on"),
                        store_url,
                    ),
                ),
            ),
        ),
    )
    return [GroupCommand(name="twilio-sms", help="Twilio SMS provider: keys, store, stand-in, webhook",
                         subcommands=commands)]
