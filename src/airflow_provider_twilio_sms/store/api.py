"""The store API: every reader and writer of the ``twilio_sms_*`` tables goes through :class:`SmsStore`.

One class, in parts by concern: claims and sends (:mod:`.claims`), rate limits (:mod:`.rate_limits`),
webhook events (:mod:`.events`), human-in-the-loop reply codes (:mod:`.hitl`), read queries and reports
(:mod:`.reads`), the asset watchers' cursors (:mod:`.watches`), scheduled sends (:mod:`.scheduled`),
retention and erasure (:mod:`.retention`), on what they share (:mod:`.base`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow_provider_twilio_sms.store.claims import Claims
from airflow_provider_twilio_sms.store.events import Events
from airflow_provider_twilio_sms.store.hitl import HitlRequests
from airflow_provider_twilio_sms.store.rate_limits import RateLimits
from airflow_provider_twilio_sms.store.reads import Reads
from airflow_provider_twilio_sms.store.retention import DEFAULT_BATCH_SIZE, Erasure, Retention
from airflow_provider_twilio_sms.store.scheduled import Scheduled
from airflow_provider_twilio_sms.store.watches import EventWatches


class SmsStore(Claims, RateLimits, Events, Reads, HitlRequests, EventWatches, Scheduled):
    """All reads and writes of the provider's tables. Thread-safe; cheap to construct per URL."""

    # -- retention and erasure (store/retention.py) ----------------------------------------------

    def purge(self, older_than: timedelta, *, dry_run: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
              now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than ``older_than``: webhook events, finished messages, reply waits and idle
        rate-limit pools, ``batch_size`` rows per transaction; returns the rows deleted per table (a dry
        run deletes nothing and returns what it would delete). See :mod:`.retention` for what stays.
        """
        return Retention(self, batch_size).purge(older_than, dry_run=dry_run, now=now)

    def forget_number(self, number: str, *, dry_run: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                      now: datetime | None = None) -> Erasure:
        """Erase what the store holds about one phone number (E.164), on every channel: its SMS rows and
        those of its ``whatsapp:`` address, keeping only an opt-out so that a STOP stays honoured; see
        :meth:`.retention.Retention.forget_number`. The counts are the sums over both.
        """
        from airflow_provider_twilio_sms.channels import WHATSAPP_PREFIX

        retention = Retention(self, batch_size)
        erasures = [retention.forget_number(address, dry_run=dry_run, now=now)
                    for address in (number, WHATSAPP_PREFIX + number)]
        deleted = {table: sum(e.deleted.get(table, 0) for e in erasures) for table in erasures[0].deleted}
        return Erasure(deleted, sum(e.opt_outs_kept for e in erasures),
                       sum(e.live_claims_kept for e in erasures))
