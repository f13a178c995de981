"""The "Twilio SMS" page: three static files served at ``/twilio_sms/ui/``, no data in them.

The page (``static/ui/``) runs in the browser inside Airflow's UI (the plugin's external view) and reads
the read API (``/twilio_sms/api/...``) with the viewer's own Airflow session cookie, so it sees exactly
what that viewer may see. Nothing here touches the store. A strict Content-Security-Policy lets the page
load only its own files and talk only to its own origin; it may be framed only by the same origin.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "app.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    # One name per joinpath: on Python 3.10 a zip-imported package's Traversable takes only one.
    return (resources.files("airflow_provider_twilio_sms.webhook") / "static" / "ui" / name).read_bytes()


def build_router() -> APIRouter:
    router = APIRouter(prefix="/ui", include_in_schema=False)

    @router.get("")
    async def page_without_slash() -> RedirectResponse:
        # Relative URLs in the page (app.js, ../api/...) need the trailing slash.
        return RedirectResponse("ui/", status_code=307)

    @router.get("/")
    async def page() -> Response:
        return Response(_read("index.html"), media_type=FILES["index.html"], headers=HEADERS)

    @router.get("/{name}")
    async def asset(name: str) -> Response:
        if name not in FILES:
            raise HTTPException(404, "Not found")
        return Response(_read(name), media_type=FILES[name], headers=HEADERS)

    return router
