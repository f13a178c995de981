"""A person marking a DAG run or a task failed (Airflow's UI or REST API) cancels what it still has scheduled.

``SendSmsOperator(send_at=...)`` leaves a message waiting at Twilio. A failure the task or the DAG meets as
it runs reaches the DAG author's own callbacks (``CancelScheduledSmsNotifier``), but a *mark* in the UI runs
no callback: without this, a run marked failed would still send its reminders. Airflow 3.3 tells listeners
of such marks, in the api-server that made them: ``on_dag_run_failed`` with "Dag Run's state was manually
set to `failed`", ``on_task_instance_failed`` with no previous state and "TaskInstance's state was manually
set to `failed`". Only those are acted on: a task that fails as it runs is retried, and its retry finds its
message still scheduled (never sent twice). Each message is canceled with the connection that sent it.

``[twilio_sms] cancel_scheduled_when_marked_failed = False`` turns this off. Nothing here raises into
Airflow: a message that could not be canceled is logged, masked, with the command that cancels it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from airflow.listeners import hookimpl

from airflow_provider_twilio_sms.privacy import mask_sid

log = logging.getLogger(__name__)

# How Airflow 3.3 words a manual mark (api_fastapi/core_api/services/public/dag_run.py, task_instances.py).
_RUN_MARKED = "Dag Run's state was manually set to"
_TASK_MARKED = "TaskInstance's state was manually set to"


@hookimpl
def on_dag_run_failed(dag_run, msg: str) -> None:
    """A DAG run marked failed: cancel every message of the run still scheduled."""
    if _RUN_MARKED in str(msg or ""):
        cancel_marked(dag_id=dag_run.dag_id, run_id=dag_run.run_id)


@hookimpl
def on_task_instance_failed(previous_state, task_instance, error) -> None:
    """A task instance marked failed: cancel its own messages still scheduled."""
    if previous_state is None and _TASK_MARKED in str(error or ""):
        cancel_marked(dag_id=task_instance.dag_id, run_id=task_instance.run_id,
                      task_ids=[task_instance.task_id], map_index=task_instance.map_index)


def cancel_marked(*, dag_id: str, run_id: str, task_ids: Sequence[str] | None = None,
                  map_index: int | None = None) -> list[dict]:
    """Cancel the run's messages (of ``task_ids``, and of ``map_index`` when it is not -1) still scheduled,
    each with the connection that sent it; what was done, per message.
    """
    from airflow_provider_twilio_sms import config

    if not config.get_bool("cancel_scheduled_when_marked_failed"):
        return []
    try:
        from airflow_provider_twilio_sms.store.locate import get_store

        store = get_store()
        rows = [row for row in store.scheduled_messages(dag_id=dag_id, run_id=run_id, task_ids=task_ids)
                if map_index is None or map_index < 0 or row.get("map_index") == map_index]
    except Exception:
        log.exception("Could not read the scheduled messages of a run marked failed: cancel them with "
                      "`airflow twilio-sms cancel --dag-id %s --run-id %s`", dag_id, run_id)
        return []
    results = []
    for conn_id in sorted({row["conn_id"] for row in rows}):
        results += _cancel_with(store, conn_id, [row["sid"] for row in rows if row["conn_id"] == conn_id],
                                dag_id=dag_id, run_id=run_id)
    if results:
        log.info("A mark as failed canceled %d scheduled message(s) of DAG %s, run %s",
                 sum(1 for r in results if r.get("status") == "canceled"), dag_id, run_id)
    return results


def _cancel_with(store, conn_id: str, sids: list[str], *, dag_id: str, run_id: str) -> list[dict]:
    from airflow_provider_twilio_sms.hooks.twilio_sms import TwilioSmsHook
    from airflow_provider_twilio_sms.scheduling import cancel_scheduled_message

    results: list[dict] = []
    try:
        hook = TwilioSmsHook(twilio_conn_id=conn_id)
    except Exception:
        log.exception("Connection %s is needed to cancel %d scheduled message(s) of a run marked failed: "
                      "fix it, then `airflow twilio-sms cancel --conn-id %s --dag-id %s --run-id %s`",
                      conn_id, len(sids), conn_id, dag_id, run_id)
        return results
    for sid in sids:
        try:
            results.append(cancel_scheduled_message(hook, store, sid=sid))
        except Exception as err:  # noqa: BLE001 - one message must not stop the others
            log.warning("Scheduled message %s of a run marked failed could not be canceled (%s): cancel it "
                        "with `airflow twilio-sms cancel --conn-id %s --dag-id %s --run-id %s`",
                        mask_sid(sid), type(err).__name__, conn_id, dag_id, run_id)
            results.append({"sid": sid, "error": type(err).__name__})
    return results
