"""Benchmark: the provider on the local Airflow cluster (scripts/cluster.py: CeleryExecutor, Redis,
PostgreSQL, separate scheduler, triggerer and api-server, the local Twilio stand-in).

Prints, each figure as the median with its range over ``--repeats`` runs:
  1. sends per second (creates arriving at the stand-in, first to last) of a mapped bulk run under a limit
     that never binds, with 2 Celery workers and then with 1;
  2. end-to-end latency of ``twilio_sms_send_and_wait`` runs triggered together: the send task's start ->
     the stand-in's ``delivered`` callback -> the (deferred) status sensor's end, p50 and p95;
  3. store transactions per second (``pg_stat_database`` of the store's database) while a triggerer holds
     ``--waits`` deferred status sensors and nothing else touches the store.

    .venv/bin/python bench/cluster.py [--sends 40] [--repeats 3] [--e2e-runs 10] [--waits 500]

The cluster takes a minute or two to start and each bulk run about a second per send on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from cluster import Cluster, _pg_admin_engine  # noqa: E402

BULK = "twilio_sms_cluster_bulk"
WAIT = "twilio_sms_cluster_bench_wait"
PERSON = "+14155550100"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    return (f"{statistics.median(values):.{digits}f} {unit} (range {min(values):.{digits}f}-"
            f"{max(values):.{digits}f}, n={len(values)})")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def sends_per_second(cluster: Cluster, sends: int) -> float:
    tag = uuid.uuid4().hex[:8]
    conf = {"message": f"Bench {tag}.", "rate_limit": "10000/1s"}
    run_id = cluster.trigger(BULK, conf, run_id=f"bench_{tag}")
    state = cluster.wait_run(BULK, run_id, timeout=60 + 10 * sends)
    if state != "success":
        raise SystemExit(f"bench run {run_id} ended {state}; logs: {cluster.logs}")
    creates = cluster.sim("GET", "requests")["creates"]
    times = sorted(_ts(c["at"]) for c in creates if tag in (c.get("body") or ""))
    return (len(times) - 1) / (times[-1] - times[0])


def end_to_end(cluster: Cluster, runs: int) -> tuple[list[float], list[float]]:
    """(send start -> delivered callback, send start -> sensor done) in seconds, one pair per run."""
    dag_id = "twilio_sms_send_and_wait"
    cluster.wait_dag(dag_id)
    ids = [cluster.trigger(dag_id, {"phone": PERSON, "order": f"B-{i}"}) for i in range(runs)]
    for run_id in ids:
        cluster.wait_run(dag_id, run_id, timeout=300)
    delivered_at = {c["sid"]: _ts(c["at"]) for c in cluster.sim("GET", "callbacks")["callbacks"]
                    if c["status"] == "delivered" and c["answer"] == 200}
    to_delivered, to_done = [], []
    for run_id in ids:
        tis = {ti["task_id"]: ti for ti in cluster.task_instances(dag_id, run_id)}
        send, sensor = tis["send"], tis["wait_delivered"]
        if send["state"] != "success" or sensor["state"] != "success":
            raise SystemExit(f"{dag_id} {run_id}: send {send['state']}, sensor {sensor['state']}")
        xcom = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/send/xcomEntries/return_value"
        sid = cluster.api("GET", xcom)["value"]["sid"]
        start = _ts(send["start_date"])
        to_delivered.append(delivered_at[sid] - start)
        to_done.append(_ts(sensor["end_date"]) - start)
    return to_delivered, to_done


def store_transactions(cluster: Cluster) -> int:
    from sqlalchemy import text

    engine = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            return int(conn.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                         "WHERE datname = :db"), {"db": cluster.store_db}).scalar_one())
    finally:
        engine.dispose()


def triggerer_queries(cluster: Cluster, waits: int, samples: int, seconds: float) -> list[float]:
    cluster.wait_dag(WAIT)
    run_id = cluster.trigger(WAIT, {})
    deadline = time.monotonic() + 60 + 3 * waits
    while True:
        states = [ti["state"] for ti in cluster.task_instances(WAIT, run_id)]
        if states.count("deferred") == waits:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"only {states.count('deferred')} of {waits} sensors deferred in time")
        time.sleep(3)
    time.sleep(10)  # the triggerer has picked them all up and polls in its steady rhythm
    rates = []
    for _ in range(samples):
        before, started = store_transactions(cluster), time.monotonic()
        time.sleep(seconds)
        rates.append((store_transactions(cluster) - before) / (time.monotonic() - started))
    cluster.api("PATCH", f"/dags/{WAIT}/dagRuns/{run_id}", {"state": "failed"})
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=40, help="sends per bulk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--e2e-runs", type=int, default=10)
    parser.add_argument("--waits", type=int, default=500, help="deferred status sensors")
    parser.add_argument("--concurrency", type=int, default=3, help="task slots per worker")
    args = parser.parse_args()
    cluster = Cluster(workers=2, concurrency=args.concurrency, db_prefix="twilio_sms_cluster_bench",
                      extra_dag_folders=(REPO / "tests" / "cluster" / "dags", REPO / "bench" / "dags"),
                      env={"TWILIO_SMS_CLUSTER_SENDS": str(args.sends),
                           "TWILIO_SMS_CLUSTER_WAITS": str(args.waits)})
    print(f"starting the cluster; logs under {cluster.logs}", flush=True)
    try:
        cluster.start()
        print("up in " + ", ".join(f"{k} {v:.0f} s" for k, v in cluster.startup_seconds.items()), flush=True)
        cluster.ensure_pool("sms_team_cluster", 2 * args.concurrency)
        cluster.wait_dag(BULK)
        sends_per_second(cluster, args.sends)  # warm-up: DAG parsed and cached, first connections made
        two = [sends_per_second(cluster, args.sends) for _ in range(args.repeats)]
        print(f"sends per second, 2 workers x {args.concurrency} slots: {spread(two, '/s')}", flush=True)
        cluster.components["worker-2"].stop()
        one = [sends_per_second(cluster, args.sends) for _ in range(args.repeats)]
        print(f"sends per second, 1 worker x {args.concurrency} slots:  {spread(one, '/s')}", flush=True)
        cluster.restart("worker-2")
        delivered, done = end_to_end(cluster, args.e2e_runs)
        print(f"end to end over {len(done)} runs (callbacks {cluster.callback_delay} s apart at the "
              "stand-in):\n"
              f"  send start -> delivered callback: p50 {percentile(delivered, 0.5):.1f} s, "
              f"p95 {percentile(delivered, 0.95):.1f} s\n"
              f"  send start -> status sensor done: p50 {percentile(done, 0.5):.1f} s, "
              f"p95 {percentile(done, 0.95):.1f} s", flush=True)
        rates = triggerer_queries(cluster, args.waits, args.repeats, 20.0)
        print(f"store transactions per second, one triggerer with {args.waits} deferred status sensors "
              f"(poll_interval 5 s): {spread(rates, '/s', 1)}; naive one query per sensor per round: "
              f"{args.waits / 5:.0f}/s", flush=True)
    finally:
        cluster.stop(drop=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
