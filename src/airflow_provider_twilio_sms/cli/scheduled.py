"""``airflow twilio-sms cancel``: cancel scheduled messages by SID, by idempotency key, or every one a DAG
run still has scheduled.

Prints one line per message (SID masked, status, when it was to go out). Exit status 1 when a named message
could not be canceled (Twilio already sent it) or nothing matched what was named.
"""

from __future__ import annotations

import sys

from airflow_provider_twilio_sms.cli.retention import _fail, _store
from airflow_provider_twilio_sms.errors import TwilioSmsError
from airflow_provider_twilio_sms.privacy import mask_sid


def cancel(args) -> None:
    """Cancel what ``--sid``, ``--idempotency-key`` or ``--dag-id``/``--run-id`` name (exactly one way)."""
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.scheduling import cancel_scheduled_message, cancel_scheduled_of_run

    by_run = bool(args.dag_id or args.run_id)
    ways = [bool(args.sid), bool(args.idempotency_key), by_run]
    if sum(ways) != 1:
        _fail("name what to cancel in exactly one way: --sid SM..., --idempotency-key KEY, or --dag-id DAG "
              "--run-id RUN (with --task-id to narrow it)")
    if by_run and not (args.dag_id and args.run_id):
        _fail("--dag-id and --run-id go together: give both")
    if args.task_id and not by_run:
        _fail("--task-id narrows --dag-id/--run-id; give those too")
    store, where = _store(args)
    hook = TwilioSmsHook(twilio_conn_id=args.conn_id)
    try:
        if by_run:
            results = cancel_scheduled_of_run(hook, store, dag_id=args.dag_id, run_id=args.run_id,
                                              task_ids=args.task_id or None)
            if not results:
                print(f"Nothing scheduled with connection {args.conn_id!r} in that DAG run (store at "
                      f"{where})")
                return
        else:
            results = [cancel_scheduled_message(hook, store, sid=args.sid or None,
                                                idempotency_key=args.idempotency_key or None,
                                                team=args.team or None)]
    except TwilioSmsError as err:
        _fail(str(err))
    failed = 0
    for result in results:
        state = "already canceled" if result.get("already_canceled") else result.get("status")
        when = f", was to be sent at {result['send_at']}" if result.get("send_at") else ""
        print(f"{mask_sid(result['sid'])}: {state}{when}")
        if result.get("error"):
            failed += 1
            print(f"  {result['error']}", file=sys.stderr)
    if failed:
        sys.exit(1)
