"""Who may use the read API, and which messages they see.

Inside the api-server, plugin apps get no authentication from Airflow, so the read API asks for it
itself with Airflow's own dependency (``get_user``: the JWT in ``Authorization: Bearer`` or the UI's
cookie; 401 without one). With ``[core] multi_team`` on, a caller sees the messages of the teams the
auth manager says they belong to (``get_authorized_teams``) plus messages sent without a team.

Message bodies (codes, personal replies) are more than the metadata: a caller reads the bodies of a
connection's messages only when the auth manager lets them read that connection
(``is_authorized_connection(method="GET")``: the Op role and above under SimpleAuthManager, with the
connection's team in multi-team mode). Everyone else who may see the message gets it without its body.

Standalone there is no Airflow auth manager: the caller presents ``[twilio_sms] webhook_api_token``
as a bearer token and sees every message with its body; without that option the read API is closed.

The webhook routes themselves never use this: Twilio authenticates by signature.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request


@dataclass(frozen=True)
class Visibility:
    """What a caller may read: the teams whose messages they see (``teams=None``: every message), and
    which connections' message bodies (``readable_connections=None``: every connection's).
    """

    teams: frozenset[str | None] | None = None
    readable_connections: Callable[[set[str]], Collection[str]] | None = None

    def bodies_readable(self, conn_ids: Collection[str]) -> frozenset[str]:
        """Those of ``conn_ids`` whose message bodies the caller may read. Blocking (the auth manager may
        ask a database): call it from a worker thread.
        """
        wanted = {c for c in conn_ids if c}
        if self.readable_connections is None or not wanted:
            return frozenset(wanted)
        return frozenset(self.readable_connections(wanted)) & wanted


EVERYTHING = Visibility()
ViewerDependency = Callable[..., Coroutine[Any, Any, Visibility]]


def airflow_viewer() -> ViewerDependency:
    """The dependency for the api-server: Airflow authentication, then the caller's teams."""
    from airflow.api_fastapi.core_api.security import get_user

    async def viewer(user=Depends(get_user)) -> Visibility:
        from airflow_provider_twilio_sms import config

        multi_team = config.airflow_multi_team()

        def readable(conn_ids: set[str]) -> set[str]:
            return _readable_connections(user, conn_ids, multi_team)

        if not multi_team:
            return Visibility(readable_connections=readable)
        import anyio
        from airflow.api_fastapi.app import get_auth_manager

        teams = await anyio.to_thread.run_sync(
            lambda: get_auth_manager().get_authorized_teams(user=user, method="GET"))
        return Visibility(teams=frozenset({*teams, None}), readable_connections=readable)

    return viewer


def _readable_connections(user: Any, conn_ids: set[str], multi_team: bool) -> set[str]:
    """The connections among ``conn_ids`` that ``user`` may read (GET), each checked with its team as
    Airflow's own connection routes check it (the team stored with the connection; none outside
    multi-team mode or for a connection Airflow's database does not hold).
    """
    from airflow.api_fastapi.app import get_auth_manager

    by_team: dict[str | None, set[str]] = {None: set(conn_ids)}
    if multi_team:
        from airflow.models.connection import Connection

        teams = Connection.get_conn_id_to_team_name_mapping(sorted(conn_ids))
        by_team = {}
        for conn_id in conn_ids:
            by_team.setdefault(teams.get(conn_id), set()).add(conn_id)
    manager = get_auth_manager()
    allowed: set[str] = set()
    for team, ids in by_team.items():
        allowed |= manager.filter_authorized_connections(conn_ids=ids, user=user, method="GET",
                                                         team_name=team)
    return allowed


async def token_viewer(request: Request) -> Visibility:
    """The dependency for the standalone app: ``Authorization: Bearer <[twilio_sms] webhook_api_token>``."""
    from airflow_provider_twilio_sms import config

    expected = config.get("webhook_api_token")
    if not expected:
        raise HTTPException(401, "The read API is closed: set [twilio_sms] webhook_api_token",
                            headers={"WWW-Authenticate": "Bearer"})
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "replace"),
                                                             expected.encode("utf-8")):
        raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})
    return EVERYTHING


def viewer_for(mode: str) -> ViewerDependency:
    return airflow_viewer() if mode == "api-server" else token_viewer
