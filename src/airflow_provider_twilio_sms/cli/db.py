"""``airflow twilio-sms db migrate|check``: the store's tables in a database of its own.

Without ``--store-url`` the store connection is used, else Airflow's metadata database (where
``airflow db migrate`` already manages the tables).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from sqlalchemy.engine import make_url

from airflow_provider_twilio_sms.errors import UnsupportedStoreError


def _url(args) -> str:
    from airflow_provider_twilio_sms.store.locate import store_url

    return args.store_url or store_url(allow_metadata_db=True)


def _where(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _refusing_unsupported():
    """A database the store does not run on ends the command with the reason and the fix, exit code 1."""
    try:
        yield
    except UnsupportedStoreError as err:
        print(f"twilio_sms: {err}", file=sys.stderr)
        sys.exit(1)


def migrate(args) -> None:
    from airflow_provider_twilio_sms.store.migrate import upgrade_url

    url = _url(args)
    with _refusing_unsupported():
        before, after = upgrade_url(url)
    if before == after:
        print(f"twilio_sms store at {_where(url)} is up to date (revision {after}).")
    else:
        print(f"twilio_sms store at {_where(url)} migrated from {before or '<empty>'} to {after}.")


def check(args) -> None:
    from airflow_provider_twilio_sms.store.migrate import is_current_url

    url = _url(args)
    with _refusing_unsupported():
        ok, current, head = is_current_url(url)
    if ok:
        print(f"twilio_sms store at {_where(url)} is at the newest revision ({head}).")
        return
    print(f"twilio_sms store at {_where(url)} is at revision {current or '<none>'}, newest is {head}: "
          "run `airflow twilio-sms db migrate`.", file=sys.stderr)
    sys.exit(1)
