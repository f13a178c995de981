"""Who may use the read API, and which messages they see.

Inside the api-server, plugin apps get no authentication from Airflow, so the read API asks for it
itself with Airflow's own dependency (``get_user``: the JWT in ``Authorization: Bearer`` or the UI's
cookie; 401 without one). With ``[core] multi_team`` on, a caller sees the messages of the teams the
auth manager says they belong to (``get_authorized_teams``) plus messages sent without a team.

Standalone there is no Airflow auth manager: the caller presents ``[twilio_sms] webhook_api_token``
as a bearer token and sees every message; without that option the read API is closed.

The webhook routes themselves never use this: Twilio authenticates by signature.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request


@dataclass(frozen=True)
class Visibility:
    """The teams whose messages a caller may read; ``teams=None`` means every message."""

    teams: frozenset[str | None] | None = None


EVERYTHING = Visibility()
ViewerDependency = Callable[..., Coroutine[Any, Any, Visibility]]


def airflow_viewer() -> ViewerDependency:
    """The dependency for the api-server: Airflow authentication, then the caller's teams."""
    from airflow.api_fastapi.core_api.security import get_user

    async def viewer(user=Depends(get_user)) -> Visibility:  # noqa: B008 - FastAPI's dependency idiom
        from airflow_provider_twilio_sms import config

        if not config.airflow_multi_team():
            return EVERYTHING
        import anyio
        from airflow.api_fastapi.app import get_auth_manager

        teams = await anyio.to_thread.run_sync(
            lambda: get_auth_manager().get_authorized_teams(user=user, method="GET"))
        return Visibility(teams=frozenset({*teams, None}))

    return viewer


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
