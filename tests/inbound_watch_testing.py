"""Helpers for the inbound-SMS asset watcher tests: a Twilio connection, inbound messages stored as the
webhook stores them, and a trigger's events collected from its real ``run()``."""

from __future__ import annotations

import asyncio
import itertools
import json

ACCOUNT = "AC" + "3" * 32
TOKEN = "watch-test-auth-token"
CONN_ID = "twilio_sms_default"
OURS = "+15005550006"
THEM = "+14155550123"

_sids = itertools.count(1)


def use_twilio_connection(monkeypatch, account: str = ACCOUNT, token: str = TOKEN) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({
        "conn_type": "twilio_sms", "login": account, "password": token,
        "extra": {"from_number": OURS, "webhook_base_url": "https://airflow.example.com"}}))


def signer_of(account: str = ACCOUNT, token: str = TOKEN) -> str:
    from airflow_provider_twilio_sms.connection import TwilioConnectionSettings

    return TwilioConnectionSettings(conn_id="any", account_sid=account, auth_token=token).signer


def inbound(store, body: str, *, to: str = OURS, sender: str = THEM, account: str = ACCOUNT,
            conn_id: str = CONN_ID, token: str = TOKEN, sid: str | None = None) -> str:
    """Store an inbound message as the webhook does once it verified it with ``conn_id``; its SID."""
    sid = sid or f"SM{next(_sids):032x}"
    assert store.record_inbound(account_sid=account, conn_id=conn_id, message_sid=sid, from_number=sender,
                                to_number=to, body=body, payload={"Body": body},
                                signer=signer_of(account, token))
    return sid


async def events_of(trigger, count: int, *, timeout: float = 30.0) -> list[dict]:
    """The payloads of the first ``count`` events ``trigger.run()`` yields (fails after ``timeout``)."""
    run = trigger.run()
    found = []
    try:
        while len(found) < count:
            found.append((await asyncio.wait_for(run.__anext__(), timeout)).payload)
    finally:
        await run.aclose()
    return found


async def no_event(trigger, *, rounds: int = 4) -> None:
    """``trigger`` yields nothing within ``rounds`` of its poll interval."""
    run = trigger.run()
    try:
        event = await asyncio.wait_for(run.__anext__(), trigger.poll_interval * rounds + 1)
    except TimeoutError:
        return
    finally:
        await run.aclose()
    raise AssertionError(f"unexpected event {event.payload}")


async def opened(store, trigger, *, timeout: float = 30.0) -> int:
    """Wait until ``trigger`` (running) has its cursor in the store; the cursor."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := await asyncio.to_thread(store.event_watch_cursor, trigger.watch_key())) is None:
        assert loop.time() < deadline, "the watcher did not open its cursor"
        await asyncio.sleep(0.02)
    return found[0]


class Running:
    """``trigger.run()`` as a task, its events' payloads collected in ``events``, until :meth:`stop`."""

    def __init__(self, trigger):
        self.trigger = trigger
        self.events: list[dict] = []
        self.task = asyncio.ensure_future(self._collect())

    async def _collect(self) -> None:
        async for event in self.trigger.run():
            self.events.append(event.payload)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if self.task.done() and not self.task.cancelled() and self.task.exception():
            raise self.task.exception()


async def until(condition, *, timeout: float = 30.0, what: str = "the condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"{what} did not happen within {timeout:.0f} s"
        await asyncio.sleep(0.02)


def fired(store, trigger, arrive, count: int) -> tuple[list[dict], object]:
    """Run ``trigger`` until its cursor is open, call ``arrive()`` (which stores messages), wait for
    ``count`` events and a few more polls (nothing more may fire); the events' payloads and what ``arrive``
    returned."""

    async def scenario():
        running = Running(trigger)
        await opened(store, trigger)
        arrived = await asyncio.to_thread(arrive)
        await until(lambda: len(running.events) >= count, what=f"{count} event(s)")
        await asyncio.sleep(trigger.poll_interval * 5)
        await running.stop()
        return running.events, arrived

    return asyncio.run(scenario())
