"""Answering an Airflow HITL request through Airflow's own HITL API, never by writing its rows.

- :class:`ApiServerResolver` (the webhook inside the api-server): calls ``update_hitl_detail``, the function
  behind the public ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/
  hitlDetails`` endpoint, with a session from Airflow's ``create_session`` (what the endpoint's
  ``SessionDep`` gives it) and the mapped user as the responding user. Airflow then does what it does for an
  answer in its UI: checks the options and the assigned users, records ``responded_by``, and resumes the
  task.
- :class:`RestResolver` (the standalone webhook): ``GET`` then ``PATCH`` that endpoint over HTTP with a
  token from ``[twilio_sms] hitl_api_token``: one token, or a JSON object of Airflow user id -> token (then
  ``responded_by`` names each mapped user; with one token it names the token's user).

Both first read the request as Airflow holds it (options, assigned users, whether it was answered, whether
the task still waits) and let :func:`decide` refuse what must change nothing: an unassigned user, an
answered or timed-out request, an answer that does not parse.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from airflow_provider_twilio_sms.hitl.answers import Answer, AnswerError, parse_answer
from airflow_provider_twilio_sms.privacy import safe_for_log

if TYPE_CHECKING:
    from airflow_provider_twilio_sms.hitl.users import HitlUser

log = logging.getLogger(__name__)

WAITING_STATES = frozenset({"awaiting_input", "deferred"})
API_TIMEOUT_SECONDS = 8.0


@dataclass(frozen=True)
class HitlRequestRef:
    """Which HITL request: its task instance try (``ti_id``) and where the REST API finds it."""

    ti_id: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int


@dataclass(frozen=True)
class HitlSnapshot:
    """A HITL request as Airflow holds it when a reply arrives."""

    options: list[str]
    multiple: bool
    params: Mapping[str, Mapping[str, Any]]
    assigned_ids: frozenset[str]
    response_received: bool
    responded_by: Mapping[str, str] | None
    waiting: bool


@dataclass(frozen=True)
class Outcome:
    """What came of a reply: ``kind`` (``answered``, ``refused``, ``already_answered``, ``timed_out``,
    ``invalid``) and the text to send back.
    """

    kind: str
    text: str
    chosen_options: list[str] = field(default_factory=list)

    @property
    def settles(self) -> bool:
        """Whether the request is now settled for good (its reply code is free again)."""
        return self.kind in ("answered", "already_answered", "timed_out")


REFUSED = Outcome("refused", "Sorry, this phone number may not answer this request. Nothing was changed.")
ALREADY_ANSWERED = Outcome("already_answered", "This request was already answered. Nothing was changed.")
TIMED_OUT = Outcome("timed_out", "This request timed out and no longer takes answers. Nothing was changed.")


def decide(snapshot: HitlSnapshot, user: HitlUser, text: str) -> Outcome | Answer:
    """The answer to submit for ``user``'s reply ``text``, or why nothing changes. Order matters: a user
    who may not answer learns nothing about the request.
    """
    if snapshot.assigned_ids and user.id not in snapshot.assigned_ids:
        return REFUSED
    if snapshot.response_received:
        # no responder: the scheduler applied the defaults at the timeout
        return ALREADY_ANSWERED if snapshot.responded_by else TIMED_OUT
    if not snapshot.waiting:
        return TIMED_OUT
    try:
        return parse_answer(text, options=snapshot.options, multiple=snapshot.multiple,
                            params=snapshot.params)
    except AnswerError as err:
        return Outcome("invalid", f"{err} Nothing was changed yet.")


def answered(answer: Answer) -> Outcome:
    chosen = ", ".join(answer.chosen_options)
    extra = " with your details" if answer.params_input else ""
    return Outcome("answered", f"Thank you: recorded {chosen}{extra}.", list(answer.chosen_options))


def _from_http_refusal(status: int, detail: str) -> Outcome:
    """What Airflow's refusal of a PATCH means to the sender (404: the request is gone, e.g. cleared)."""
    if status == 409:
        return ALREADY_ANSWERED
    if status == 403:
        return REFUSED
    if status == 404:
        return TIMED_OUT
    return Outcome("invalid", f"Airflow did not accept that answer: {safe_for_log(detail, 120)}")


class Resolver(Protocol):
    """Answers a HITL request as ``user`` with the reply ``text``."""

    def answer(self, ref: HitlRequestRef, user: HitlUser, text: str) -> Outcome: ...


def _api_server_user(user: HitlUser):
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

    class SmsHitlUser(BaseUser):
        """The mapped Airflow user, as the responding user of ``update_hitl_detail``."""

        def get_id(self) -> str:
            return user.id

        def get_name(self) -> str:
            return user.name

    return SmsHitlUser()


class ApiServerResolver:
    """Inside the api-server: the PATCH endpoint's own function, in one transaction that first locks the
    task instance (as the endpoint does), so the decision and the write see the same state.
    """

    def answer(self, ref: HitlRequestRef, user: HitlUser, text: str) -> Outcome:
        import uuid

        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from fastapi import HTTPException
        from sqlalchemy import select

        ti_id = uuid.UUID(ref.ti_id)
        with create_session(scoped=False) as session:
            ti = session.get(TaskInstance, ti_id, with_for_update={"of": TaskInstance})
            detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti_id)) if ti else None
            if ti is None or detail is None:  # cleared since: a new try has a new id and a new SMS
                return TIMED_OUT
            snapshot = HitlSnapshot(
                options=list(detail.options or []), multiple=bool(detail.multiple),
                params=detail.params or {},
                assigned_ids=frozenset(str(u["id"]) for u in detail.assigned_users),
                response_received=bool(detail.response_received), responded_by=detail.responded_by,
                waiting=str(getattr(ti.state, "value", ti.state)) in WAITING_STATES)
            decision = decide(snapshot, user, text)
            if isinstance(decision, Outcome):
                return decision
            try:
                update_hitl_detail(
                    dag_id=ti.dag_id, dag_run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index,
                    update_hitl_detail_payload=UpdateHITLDetailPayload(
                        chosen_options=decision.chosen_options, params_input=decision.params_input),
                    user=_api_server_user(user), session=session)
            except HTTPException as err:
                session.rollback()
                return _from_http_refusal(err.status_code, str(err.detail))
        return answered(decision)


class HitlApiError(RuntimeError):
    """Airflow's REST API could not be asked (unreachable, or an answer that is no refusal)."""


class RestResolver:
    """The standalone webhook: Airflow's public REST API, ``GET`` then ``PATCH`` ``.../hitlDetails``."""

    def __init__(self, api_url: str, tokens: Mapping[str, str], timeout: float = API_TIMEOUT_SECONDS):
        self.api_url, self.tokens, self.timeout = api_url.rstrip("/"), dict(tokens), timeout

    def _token(self, user: HitlUser) -> str | None:
        return self.tokens.get(user.id) or self.tokens.get("*")

    def _url(self, ref: HitlRequestRef) -> str:
        return (f"{self.api_url}/api/v2/dags/{quote(ref.dag_id, safe='')}"
                f"/dagRuns/{quote(ref.run_id, safe='')}"
                f"/taskInstances/{quote(ref.task_id, safe='')}/{int(ref.map_index)}/hitlDetails")

    def answer(self, ref: HitlRequestRef, user: HitlUser, text: str) -> Outcome:
        import httpx

        token = self._token(user)
        if not token:  # this user cannot act in Airflow from here: as if the number were not mapped
            log.error("[twilio_sms] hitl_api_token has no token for Airflow user %s, so the standalone "
                      "webhook cannot answer for that user: add one under its user id, or a shared one "
                      "under \"*\"",
                      safe_for_log(user.id, 100))
            return REFUSED
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(timeout=self.timeout, headers=headers) as client:
                got = client.get(self._url(ref))
                if got.status_code == 404:
                    return TIMED_OUT
                if got.status_code != 200:
                    raise HitlApiError(f"GET hitlDetails answered HTTP {got.status_code}")
                detail = got.json()
                ti = detail.get("task_instance") or {}
                if str(ti.get("id")) != ref.ti_id:  # cleared since: another try waits, with its own SMS
                    return TIMED_OUT
                snapshot = HitlSnapshot(
                    options=list(detail.get("options") or []), multiple=bool(detail.get("multiple")),
                    params=detail.get("params") or {},
                    assigned_ids=frozenset(str(u["id"]) for u in detail.get("assigned_users") or []),
                    response_received=bool(detail.get("response_received")),
                    responded_by=detail.get("responded_by_user"),
                    waiting=str(ti.get("state")) in WAITING_STATES)
                decision = decide(snapshot, user, text)
                if isinstance(decision, Outcome):
                    return decision
                sent = client.patch(self._url(ref), json={"chosen_options": decision.chosen_options,
                                                          "params_input": decision.params_input})
        except httpx.HTTPError as err:
            raise HitlApiError(f"Airflow's REST API did not answer ({type(err).__name__})") from None
        if sent.status_code == 200:
            return answered(decision)
        if sent.status_code in (400, 403, 404, 409, 422):
            try:
                detail_text = str(sent.json().get("detail"))
            except ValueError:
                detail_text = ""
            return _from_http_refusal(sent.status_code, detail_text)
        raise HitlApiError(f"PATCH hitlDetails answered HTTP {sent.status_code}")


def resolver_for(mode: str) -> Resolver:
    """The api-server's own code path in the api-server; the REST API from the standalone webhook."""
    if mode == "api-server":
        return ApiServerResolver()
    from airflow_provider_twilio_sms import config

    url = config.get("hitl_api_url") or ""
    raw = config.get("hitl_api_token") or ""
    if not url or not raw:
        raise HitlApiError("the standalone webhook answers human-in-the-loop replies through Airflow's REST "
                           "API: set [twilio_sms] hitl_api_url and hitl_api_token")
    tokens = _tokens(raw)
    return RestResolver(url, tokens)


def _tokens(raw: str) -> dict[str, str]:
    import json

    text = raw.strip()
    if not text.startswith("{"):
        return {"*": text}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise HitlApiError("[twilio_sms] hitl_api_token looks like a JSON object but is not valid "
                           "JSON") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise HitlApiError('[twilio_sms] hitl_api_token must be a token or {"<user id>": "<token>", ...}')
    return {str(k): v for k, v in value.items()}
