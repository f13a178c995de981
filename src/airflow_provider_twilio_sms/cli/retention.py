"""``airflow twilio-sms db purge`` and ``airflow twilio-sms forget``: retention and erasure in the store.

Both print rows per table, never a phone number in full. Errors go to stderr and exit with status 1.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, NoReturn

from airflow_provider_twilio_sms.cli.db import _url, _where
from airflow_provider_twilio_sms.errors import ConnectionConfigError, InvalidMessageError
from airflow_provider_twilio_sms.privacy import mask_number

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.store.api import SmsStore

# Below this age the purge warns: a task retried or cleared after its message row went sends it again.
_SHORT_AGE = timedelta(days=1)


def _fail(message: str) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(1)


def _store(args) -> tuple[SmsStore, str]:
    """The store the command works on, refused unless its tables are at the newest revision."""
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.migrate import is_current_url

    url = _url(args)
    ok, current, head = is_current_url(url)
    if not ok:
        _fail(f"twilio_sms store at {_where(url)} is at revision {current or '<none>'}, newest is {head}: "
              "run `airflow twilio-sms db migrate` first")
    return SmsStore(url), _where(url)


def _print_counts(counts: dict[str, int]) -> None:
    width = max(len(table) for table in counts)
    for table, count in counts.items():
        print(f"  {table:<{width}}  {count:>10}")
    print(f"  {'total':<{width}}  {sum(counts.values()):>10}")


def purge(args) -> None:
    """Delete what is older than ``--older-than`` (default ``[twilio_sms] retention_days``), in batches."""
    from airflow_provider_twilio_sms.retention import configured_age, format_age, parse_age
    from airflow_provider_twilio_sms.store.retention import MAX_BATCH_SIZE

    try:
        age = parse_age(args.older_than) if args.older_than is not None else configured_age()
    except ConnectionConfigError as err:
        _fail(str(err))
    except ValueError as err:
        _fail(f"--older-than {err}")
    if age < _SHORT_AGE:
        print(f"Warning: purging what is older than {format_age(age)}: a task retried or cleared after its "
              "message is purged sends it again. Keep the age far longer than any task can still be retried.",
              file=sys.stderr)
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        _fail(f"--batch-size {args.batch_size} is out of range: give 1 to {MAX_BATCH_SIZE} rows per "
              "transaction")
    store, where = _store(args)
    now = datetime.now(timezone.utc)
    counts = store.purge(age, dry_run=args.dry_run, batch_size=args.batch_size, now=now)
    cutoff, older = (now - age).isoformat(timespec="seconds"), format_age(age)
    if args.dry_run:
        print(f"Dry run, nothing deleted: twilio_sms store at {where} holds, older than {older} (before "
              f"{cutoff}), rows a purge would delete:")
    else:
        print(f"twilio_sms store at {where}: deleted what is older than {older} (before {cutoff}), "
              f"{args.batch_size} rows per transaction:")
    _print_counts(counts)


def forget(args) -> None:
    """Erase what the store holds about ``--number``, keeping an opt-out so that its STOP stays honoured."""
    from airflow_provider_twilio_sms.phone import EXAMPLE, normalize_number

    given = (args.number or "").strip()
    try:
        if not given.startswith("+"):
            raise InvalidMessageError("no leading +")
        number = normalize_number(given)
    except InvalidMessageError:
        _fail(f"--number {mask_number(given)} is not a phone number in E.164: write it with its country "
              f"code, like {EXAMPLE}")
    store, where = _store(args)
    erased = store.forget_number(number, dry_run=args.dry_run)
    masked = mask_number(number)
    if args.dry_run:
        print(f"Dry run, nothing erased: twilio_sms store at {where} holds, about {masked}, rows forget "
              "would delete:")
    else:
        print(f"twilio_sms store at {where}: erased {masked}:")
    _print_counts(erased.deleted)
    verb = "would keep" if args.dry_run else "kept"
    if erased.opt_outs_kept:
        print(f"  {verb} {erased.opt_outs_kept} opt-out(s) of {masked}, keyword and message SID cleared: "
              "sends to the number stay refused")
    if erased.live_claims_kept:
        print(f"  {verb} {erased.live_claims_kept} send(s) to {masked} still in flight: run forget again "
              "once they are over")
