"""The local cluster (scripts/cluster.py) for the tests in this folder: started once per module, stopped
(every process, by process group) when the module ends, whether its tests passed or not.

It needs PostgreSQL and Redis (or ``redis-server`` to start one): without them the tests are skipped with
the reason, unless ``TWILIO_SMS_TEST_REQUIRE`` names ``cluster`` (CI): then they fail.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, skip_or_fail

sys.path.insert(0, str(REPO / "scripts"))

from cluster import Cluster, ClusterError, ensure_postgres, redis_answers

DAGS = Path(__file__).resolve().parent / "dags"
# Sends per bulk run. The 200 take minutes of task start-ups on a 2-core machine that also runs the
# rest of the suite (about one task a second here), and the module must end within 10 minutes;
# TWILIO_SMS_CLUSTER_SENDS=200 runs the full size.
SENDS = int(os.environ.get("TWILIO_SMS_CLUSTER_SENDS", "24"))


def announce(request, text: str) -> None:
    """Print past pytest's capture (where the logs are, how long start-up took)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n[cluster] {text}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture(request):
    if not redis_answers(6379) and shutil.which("redis-server") is None:
        skip_or_fail("cluster", "no Redis answers on 127.0.0.1:6379 and redis-server is not installed")
    try:
        ensure_postgres()
    except ClusterError as err:
        skip_or_fail("cluster", str(err))
    root = Path(tempfile.mkdtemp(prefix="twilio-sms-cluster-test-"))
    cluster = Cluster(root=root, workers=2, concurrency=3, api_workers=2, api_replicas=2,
                      db_prefix="twilio_sms_cluster_test", extra_dag_folders=(DAGS,),
                      env={"TWILIO_SMS_CLUSTER_SENDS": str(SENDS)})
    announce(request, f"starting; logs under {cluster.logs}")
    try:
        try:
            cluster.start()
        except ClusterError as err:
            pytest.fail(f"the cluster did not start: {err}")
        announce(request, "up in " + ", ".join(f"{k} {v:.0f} s" for k, v in cluster.startup_seconds.items()))
        cluster.ensure_pool("sms_team_cluster", 16)
        yield cluster
    finally:
        cluster.stop(drop=True)
