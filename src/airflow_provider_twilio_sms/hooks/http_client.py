"""The HTTP client under the hook's twilio-python ``Client``: twilio-python's requests-based client with
three changes.

- It keeps each thread's last response headers (``Retry-After`` for the retry policy).
- It logs only the method and path: twilio-python logs query strings, and they hold phone numbers.
- It reads proxy and CA-bundle settings from the environment once per origin, as httpx does when a
  client is created. requests reads them again on every request (``HTTPS_PROXY``, ``NO_PROXY``,
  ``REQUESTS_CA_BUNDLE``...), scanning every environment variable twice, which costs a send about
  0.2 ms of CPU. A client is shared by the hooks of its connection in a process (:mod:`.clients`) only
  while these settings stay the same (:func:`environment_settings` is part of what it is made of), so
  a task sees the environment it started with.

Imported only when a client is built: DAG files import the hook module on every parse.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit


@functools.cache
def http_client_class():
    """The client class (built on first use, so that importing this module imports neither twilio nor
    requests).
    """
    from requests import Session
    from twilio.http.http_client import TwilioHttpClient

    class SessionReadingEnvironmentOnce(Session):
        """A requests ``Session`` that merges the environment's settings once per scheme and host."""

        def __init__(self):
            super().__init__()
            self._environment: dict[tuple[str, str], Mapping[str, Any]] = {}
            self._environment_lock = threading.Lock()

        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            if proxies or stream is not None or verify is not None or cert is not None:
                # Settings given for this request (a proxy configured on the client): requests' own merge.
                return super().merge_environment_settings(url, proxies, stream, verify, cert)
            origin = urlsplit(url)[:2]
            found = self._environment.get(origin)
            if found is None:
                with self._environment_lock:
                    found = self._environment.get(origin)
                    if found is None:
                        found = super().merge_environment_settings(url, {}, None, None, None)
                        self._environment[origin] = found
            # A copy: requests may change the proxies mapping it is given.
            return {**found, "proxies": dict(found["proxies"])}

    class ProviderHttpClient(TwilioHttpClient):
        session: Session | None  # twilio-python's (None when it was built without one)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._local = threading.local()
            if self.session is not None:  # keep twilio-python's adapters (its pool sizes) on our session
                session = SessionReadingEnvironmentOnce()
                for prefix, adapter in self.session.adapters.items():
                    session.mount(prefix, adapter)
                self.session = session

        def request(self, *args, **kwargs):
            self._local.headers = {}
            response = super().request(*args, **kwargs)
            self._local.headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
            return response

        @property
        def last_headers(self) -> dict[str, str]:
            """Headers of the last response this thread received (lower-case names)."""
            return getattr(self._local, "headers", None) or {}

        def log_request(self, kwargs: dict[str, Any]) -> None:
            self.logger.debug("Twilio API request: %s %s", kwargs.get("method"), urlsplit(kwargs["url"]).path)

        def log_response(self, status_code: int, response: Any) -> None:
            self.logger.debug("Twilio API response: HTTP %s", status_code)

    return ProviderHttpClient


# What requests reads from the environment besides the ``*_proxy`` variables (see requests.utils and
# requests.sessions.Session.merge_environment_settings).
_ENVIRONMENT_NAMES = frozenset({"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC"})


def environment_settings() -> tuple[tuple[str, str], ...]:
    """The environment variables a client's session takes its proxies, CA bundle and netrc from, as they
    are now (one pass over the environment).
    """
    return tuple(sorted((name, value) for name, value in os.environ.items()
                        if name in _ENVIRONMENT_NAMES or name.lower().endswith("_proxy")))


def quiet_twilio_logger() -> logging.Logger:
    """A logger for a plain ``TwilioHttpClient`` that drops its INFO lines (they carry phone numbers)."""
    logger = logging.getLogger("airflow_provider_twilio_sms.twilio_http")
    logger.setLevel(logging.WARNING)
    return logger
