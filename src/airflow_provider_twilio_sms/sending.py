"""The idempotent send path shared by ``SendSmsOperator`` and ``SmsNotifier``.

One SMS per idempotency key, ever. Twilio's Messages API has no idempotency key of its own, so the
guarantee is built here:

1. validate and normalise before anything else (no store row, no HTTP for a bad number);
2. in one transaction, refuse opted-out recipients and claim the key in the store (unique
   constraint): a key already sent returns its recorded result;
   a live claim elsewhere is waited on, never sent over; a claim whose attempt may have reached Twilio
   is reconciled first (``reconciliation.py``: every message Twilio created for the recipient since
   that attempt) and never re-POSTed blindly;
3. send with our retry policy: transient refusals back off with jitter (honouring Retry-After),
   permanent errors fail at once, an unknown outcome is reconciled before any second POST. Under a rate
   limit every POST takes its slot in the team pool right before it leaves (exact, on the database's
   clock, see :meth:`SmsStore.acquire_rate_slot`): after the client is built and after any backoff, and
   again when it could not leave within ``rate_send_bound``; once Twilio answered, the slot counts the
   request until then only, and a request that never left gives its slot back. A send the limit turns
   away leaves no row behind (nothing reached Twilio): the next attempt claims anew.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_twilio_sms.errors import (
    InvalidMessageError,
    OptedOutError,
    PermanentTwilioError,
    RetryableTwilioError,
    TwilioSmsError,
    UnknownOutcomeError,
    describe_error_code,
)
from airflow_provider_twilio_sms.hooks.twilio_sms import LIST_PAGE_SIZE
from airflow_provider_twilio_sms.privacy import mask_number, mask_sid
from airflow_provider_twilio_sms.scheduling import SCHEDULE_REFUSALS, schedule_refusal
from airflow_provider_twilio_sms.store.claims import Claim, make_scope

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.rate_limit import RateLimit
    from airflow_provider_twilio_sms.store.api import SmsStore
    from airflow_provider_twilio_sms.store.rate_limits import RateGrant

log = logging.getLogger(__name__)


class ClaimHeldError(TwilioSmsError):
    """Another live attempt holds the send's claim; this attempt did not send (Airflow may retry)."""


@dataclass(frozen=True)
class SendRequest:
    """One message to send (SMS or WhatsApp: ``to`` may be a ``whatsapp:`` address). Numbers are normalised
    by :meth:`SmsSender.send` before use. ``content_sid`` and ``content_variables`` (a dict, or its JSON)
    send a Content template instead of ``body``.
    """

    to: str
    body: str | None
    idempotency_key: str
    from_: str | None = None
    messaging_service_sid: str | None = None
    media_urls: tuple[str, ...] = ()
    status_callback: str | None = None
    validity_period: int | None = None
    team: str | None = None
    pool: str | None = None
    rate_limit: RateLimit | None = None
    rate_limit_unit: str = "messages"  # or "segments"
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    content_sid: str | None = None
    content_variables: Any = None
    send_at: datetime | None = None  # aware; set: Twilio schedules the message (scheduling.py)


@dataclass(frozen=True)
class Content:
    """What a send says, validated: its body, or its Content template and canonical variables (JSON)."""

    body: str | None
    sid: str | None
    variables: str | None

    @classmethod
    def of(cls, request: SendRequest) -> Content:
        from airflow_provider_twilio_sms.content import validate_content

        sid, variables = validate_content(request.body, list(request.media_urls), request.content_sid,
                                          request.content_variables)
        return cls(request.body, sid, variables)

    @property
    def digest(self) -> str:
        from airflow_provider_twilio_sms.content import content_digest

        return content_digest(self.body, self.sid, self.variables)


@dataclass(frozen=True)
class RateLimited:
    """No slot was free: nothing was sent, the claim was given up; try again in ``wait_seconds``, at
    ``next_free_at`` on the database's clock (a worker's clock may differ: wait the seconds).
    """

    next_free_at: datetime
    pool: str
    limit: RateLimit
    wait_seconds: float = 0.0


@dataclass
class RetryPolicy:
    """Backoff for transient refusals: exponential with full jitter, bounded in attempts and time."""

    max_attempts: int = 5
    base_seconds: float = 1.0
    cap_seconds: float = 30.0
    max_total_seconds: float = 180.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))
        return max(backoff, retry_after or 0.0)


def result_for_xcom(row: dict[str, Any], idempotency_key: str, *, already_sent: bool) -> dict[str, Any]:
    """What downstream tasks get: plain JSON, the recipient masked, no body. The key is the caller's,
    whole: the row keeps it only when it fits.
    """
    sent_at, send_at = row.get("sent_at"), row.get("send_at")
    return {
        "sid": row.get("sid"),
        "status": row.get("status"),
        "idempotency_key": idempotency_key,
        "segments": row.get("num_segments"),
        "encoding": row.get("encoding"),
        "to": mask_number(row.get("to_number")),
        "account_sid": row.get("account_sid"),
        "conn_id": row.get("conn_id"),
        "sent_at": sent_at.isoformat() if sent_at else None,
        "send_at": send_at.isoformat() if send_at else None,
        "already_sent": already_sent,
    }


class SmsSender:
    """Sends through a :class:`TwilioSmsHook`, recording every step in an :class:`SmsStore`."""

    def __init__(self, hook: TwilioSmsHook, store: SmsStore, *, lease_seconds: float = 120,
                 retry: RetryPolicy | None = None, held_poll_seconds: float = 1.0,
                 attempt_id: str | None = None, reconcile_page_size: int = LIST_PAGE_SIZE,
                 rate_send_bound: float = 1.0, store_bodies: bool = False):
        self.hook = hook
        self.store = store
        self.lease_seconds = lease_seconds
        self.retry = retry or RetryPolicy()
        self.held_poll_seconds = held_poll_seconds
        self.attempt_id = attempt_id
        self.reconcile_page_size = reconcile_page_size
        # How long after its rate-limit grant a request may still be handed to the client; later, it takes
        # a new grant. The grant's slots count the request for this long plus the client's timeout (the
        # connect may take that long) before Twilio answers.
        self.rate_send_bound = rate_send_bound
        # Keep the message text in the store ([twilio_sms] store_outbound_bodies); its SHA-256 is kept either
        # way, and reconciliation compares the retried request's own text with Twilio's.
        self.store_bodies = store_bodies

    # -- the public entry point -----------------------------------------------------------------

    def send(self, request: SendRequest) -> dict[str, Any] | RateLimited:
        """Send ``request`` at most once; return the XCom result, or :class:`RateLimited`."""
        from airflow_provider_twilio_sms.channels import check_same_channel, normalize_address
        from airflow_provider_twilio_sms.segments import message_units

        settings = self.hook.settings
        to = normalize_address(request.to, settings.default_region)
        content = Content.of(request)
        segments, _ = message_units(to, request.body, content.sid)
        cost = segments if request.rate_limit_unit == "segments" else 1
        if request.rate_limit is not None and cost > request.rate_limit.count:
            raise InvalidMessageError(
                f"this message is {cost} segments, more than the whole rate limit "
                f"{request.rate_limit.count} per {request.rate_limit.window_seconds} s of its pool: it could "
                "never be sent; shorten it or raise the limit"
            )
        messaging_service_sid: str | None
        if request.send_at is not None:  # checked before anything is claimed: a refusal leaves no trace
            from airflow_provider_twilio_sms.scheduling import check_window, scheduled_sender

            from_, messaging_service_sid = scheduled_sender(settings, request.from_,
                                                            request.messaging_service_sid)
            request = replace(request, send_at=check_window(request.send_at))  # UTC, whole seconds
        else:
            from_, messaging_service_sid = settings.resolve_sender(request.from_,
                                                                   request.messaging_service_sid)
        channel = check_same_channel(to, from_)
        # One transaction refuses an opted-out recipient and claims the key; with no rate limit to
        # decide, it also records that the request is about to leave.
        claim = self._claim(request, to, from_, messaging_service_sid, settings, content, channel,
                            attempting=request.rate_limit is None)
        if claim.outcome == "opted_out":
            raise OptedOutError(
                f"{mask_number(to)} replied STOP to this account; not sending. They must reply START "
                "before they can be messaged again", code=21610)
        if not claim.owned:
            return self._finished(claim, request)
        if claim.outcome == "resume" and claim.row.get("send_at") != request.send_at:
            self.store.record_send_at(claim, request.send_at)  # the earlier attempt never reached Twilio
        if claim.outcome == "reconcile":
            found = self._reconcile(claim, request, to, from_, messaging_service_sid, content)
            if found is not None:
                return found

        return self._send_with_retries(claim, request, to, from_, messaging_service_sid, cost, content)

    # -- steps ----------------------------------------------------------------------------------

    @staticmethod
    def _pool(request: SendRequest) -> str:
        from airflow_provider_twilio_sms.rate_limit import team_pool

        return team_pool(request.team, request.pool)

    def _claim(self, request: SendRequest, to: str, from_: str | None, messaging_service_sid: str | None,
               settings, content: Content, channel: str, *, attempting: bool) -> Claim:
        """Claim the key; wait while a live attempt elsewhere holds it (it may finish, or die)."""
        deadline = time.monotonic() + self.lease_seconds + 5
        while True:
            claim = self.store.claim(
                scope=make_scope(settings.account_sid, request.team),
                idempotency_key=request.idempotency_key,
                account_sid=settings.account_sid,
                conn_id=settings.conn_id,
                signer=settings.signer,
                to_number=to,
                body=request.body,
                body_sha256=content.digest,
                channel=channel,
                from_number=from_,
                messaging_service_sid=messaging_service_sid,
                num_media=len(request.media_urls),
                lease_seconds=self.lease_seconds,
                attempt_id=self.attempt_id,
                team=request.team,
                pool=request.pool,
                dag_id=request.dag_id,
                task_id=request.task_id,
                run_id=request.run_id,
                map_index=request.map_index,
                attempting=attempting,
                refuse_opted_out=True,
                store_body=self.store_bodies,
                send_at=request.send_at,
            )
            if claim.outcome != "held":
                return claim
            if time.monotonic() > deadline:
                raise ClaimHeldError(
                    "another attempt is still sending this message (its claim is held until "
                    f"{claim.row['lease_expires_at'].isoformat()}); nothing was sent by this attempt. "
                    "It will be retried; raise [twilio_sms] send_lease_seconds if sends are slow")
            log.info("Another attempt holds the claim on this message until %s; waiting",
                     claim.row["lease_expires_at"].isoformat())
            self.retry.sleep(self.held_poll_seconds)

    def _finished(self, claim: Claim, request: SendRequest) -> dict[str, Any]:
        row, key = claim.row, request.idempotency_key
        if claim.outcome == "sent" and row.get("send_at") is not None:
            from airflow_provider_twilio_sms.scheduling import already_scheduled

            return already_scheduled(row, request.send_at, result_for_xcom(row, key, already_sent=True))
        if claim.outcome == "sent":
            log.info("Message already sent (SID %s) for this idempotency key; not sending again",
                     mask_sid(row["sid"]))
            return result_for_xcom(row, key, already_sent=True)
        raise PermanentTwilioError(
            f"an earlier attempt with this idempotency key failed for good: "
            f"{describe_error_code(row.get('error_code'))}; use a new idempotency key to send again",
            code=row.get("error_code"))

    def _reconcile(self, claim: Claim, request: SendRequest, to: str, from_: str | None,
                   messaging_service_sid: str | None, content: Content) -> dict[str, Any] | None:
        """An earlier attempt may have reached Twilio: find its message there before sending anew.

        Returns the recorded result when Twilio has it, None when Twilio certainly has not. When that
        cannot be decided (a message that may be ours, or Twilio's list failing) the claim is left for
        the next attempt to reconcile at once, and the error is raised: nothing is sent.
        """
        from airflow_provider_twilio_sms.reconciliation import find_sent_message, reconcile_since

        renewed = [time.monotonic()]

        def renew_lease() -> None:  # a long walk through Twilio's pages must not lose the claim
            if time.monotonic() - renewed[0] > self.lease_seconds / 3:
                self.store.extend_lease(claim, self.lease_seconds)
                renewed[0] = time.monotonic()

        try:
            outcome = find_sent_message(self.hook, self.store, claim, to=to, from_=from_,
                                        messaging_service_sid=messaging_service_sid, body=request.body,
                                        page_size=self.reconcile_page_size, on_page=renew_lease,
                                        content_sid=content.sid)
        except (UnknownOutcomeError, RetryableTwilioError, PermanentTwilioError):
            self.store.record_unknown(claim)
            raise
        if outcome.found is not None:
            log.info("Reconciled: the earlier attempt's message exists at Twilio (SID %s); recording it",
                     mask_sid(outcome.found["sid"]))
            row = self.store.record_sent(claim, outcome.found)
            return result_for_xcom(row, request.idempotency_key, already_sent=True)
        log.info("Reconciled: none of the %d messages to %s since %s at Twilio is this one; sending",
                 outcome.examined, mask_number(to), reconcile_since(claim).isoformat())
        return None

    def _send_with_retries(self, claim: Claim, request: SendRequest, to: str, from_: str | None,
                           messaging_service_sid: str | None, cost: int,
                           content: Content) -> dict[str, Any] | RateLimited:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            grant: RateGrant | None = None
            if request.rate_limit is not None:
                decided = self._rate_grant(claim, request, cost)
                if isinstance(decided, RateLimited):
                    self.store.withdraw(claim)
                    log.info("Rate limit %s of pool %s reached; next free slot in %.1f s", request.rate_limit,
                             decided.pool, decided.wait_seconds)
                    return decided
                grant = decided
            elif attempt > 1 or not claim.row.get("http_attempted_at"):  # else the claim already marked it
                self.store.mark_attempt(claim, lease_seconds=self.lease_seconds)
            try:
                result = self._post(grant, to, request, from_, messaging_service_sid, content)
            except OptedOutError as err:
                self.store.set_opt_out(
                    claim.row["account_sid"], to, True, keyword="21610", signer=claim.row.get("signer") or ""
                )
                self.store.record_failed(claim, err.code, str(err))
                raise
            except PermanentTwilioError as err:
                if request.send_at is not None and err.code in SCHEDULE_REFUSALS:
                    self._give_back(claim)  # nothing was created: a corrected attempt may use the key
                    raise schedule_refusal(err) from None
                self.store.record_failed(claim, err.code, str(err))
                raise
            except InvalidMessageError:  # the hook's own checks refused it: nothing left
                self._give_back(claim)
                raise
            except UnknownOutcomeError:
                # The claim stays ours and its row already says an HTTP attempt was made, so if this
                # process dies now the next attempt reconciles too.
                log.warning("No answer from Twilio after the request left (attempt %d); reconciling before "
                            "any new request", attempt)
                found = self._reconcile(claim, request, to, from_, messaging_service_sid, content)
                if found is not None:
                    return found
                if not self._may_retry(attempt, started, None):
                    self.store.record_unknown(claim)
                    raise
                continue
            except RetryableTwilioError as err:
                self.store.clear_attempt(claim)
                delay = self.retry.delay(attempt, err.retry_after)
                if not self._may_retry(attempt, started, delay):
                    self.store.release(claim)
                    raise
                log.warning("Twilio refused the request for now (%s); retrying in %.1f s (attempt %d of %d)",
                            describe_error_code(err.code), delay, attempt, self.retry.max_attempts)
                self.retry.sleep(delay)
                continue
            row = self.store.record_sent(claim, result)
            # DEBUG: the hook's INFO line already says the same ("Twilio accepted an SMS to ..."); a second
            # line at INFO costs as much as a store transaction.
            log.debug("Recorded the SMS to %s: SID %s, status %s, %s segment(s)", mask_number(to),
                      mask_sid(row["sid"]), row["status"], row.get("num_segments"))
            return result_for_xcom(row, request.idempotency_key, already_sent=False)

    def _give_back(self, claim: Claim) -> None:
        """Nothing reached Twilio (refused before creating anything): the key is free for the next attempt."""
        self.store.clear_attempt(claim)
        self.store.withdraw(claim)

    def _rate_grant(self, claim: Claim, request: SendRequest, cost: int) -> RateGrant | RateLimited:
        """Slots for the POST about to leave, taken as late as possible: the client is built first, and a
        grant that could not be handed on within ``rate_send_bound`` is given back and taken anew. The
        attempt is marked (the request may reach Twilio) under the grant.
        """
        limit = request.rate_limit
        if limit is None:
            raise ValueError("_rate_grant is for requests with a rate limit")
        pool = self._pool(request)
        self.hook.get_conn()  # building the client (imports, settings) must not eat into the bound
        hold = self.rate_send_bound + self.hook.timeout + 1.0
        while True:
            asked = time.monotonic()
            decision = self.store.acquire_rate_slot(pool, limit.count, limit.window_seconds, cost=cost,
                                                    hold_seconds=hold)
            grant = decision.grant  # set exactly when granted
            if grant is None:
                if decision.next_free_at is None:
                    raise RuntimeError("a refused rate-limit decision must say when a slot frees up")
                return RateLimited(decision.next_free_at, pool, limit, decision.wait_seconds)
            try:
                self.store.mark_attempt(claim, lease_seconds=self.lease_seconds)
            except BaseException:
                self._settle(grant, reached_twilio=False)
                raise
            if time.monotonic() - asked <= self.rate_send_bound:
                return grant
            log.info("The request could not leave within %.1f s of its rate-limit slot; taking a new one",
                     self.rate_send_bound)
            self._settle(grant, reached_twilio=False)

    def _post(self, grant: RateGrant | None, to: str, request: SendRequest, from_: str | None,
              messaging_service_sid: str | None, content: Content) -> dict[str, Any]:
        """The create request; then its rate-limit slots count it only until Twilio answered, or are given
        back when it never left (refused before connecting, or invalid).
        """
        reached = True
        try:
            return self.hook.send_message(
                to, request.body, from_=from_, messaging_service_sid=messaging_service_sid,
                media_url=list(request.media_urls) or None, status_callback=request.status_callback,
                validity_period=request.validity_period, content_sid=content.sid,
                content_variables=content.variables, send_at=request.send_at)
        except TwilioSmsError as err:
            reached = isinstance(err, UnknownOutcomeError) or getattr(err, "http_status", None) is not None
            raise
        finally:
            if grant is not None:
                self._settle(grant, reached_twilio=reached)

    def _settle(self, grant: RateGrant, *, reached_twilio: bool) -> None:
        try:
            self.store.settle_rate_grant(grant, reached_twilio=reached_twilio)
        except Exception:  # the slots keep their reservation: the limit still holds
            log.warning("Could not settle a rate-limit slot of pool %s; it counts until its reservation ends",
                        grant.pool, exc_info=True)

    def _may_retry(self, attempt: int, started: float, delay: float | None) -> bool:
        elapsed = time.monotonic() - started + (delay or 0)
        return attempt < self.retry.max_attempts and elapsed <= self.retry.max_total_seconds


def default_idempotency_key(dag_id: str, task_id: str, run_id: str, map_index: int | None, to: str) -> str:
    """Stable across attempts of one task instance, distinct across mapped instances; no PII inside."""
    import hashlib

    raw = "\x1f".join([dag_id, task_id, run_id, str(-1 if map_index is None else map_index), to])
    return "ti-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]
