"""A real ``airflow api-server`` on 127.0.0.1 for the browser tests, in its own AIRFLOW_HOME.

SimpleAuthManager with users from the config (an admin, and two viewers in different teams with
``[core] multi_team`` on), passwords in the file the auth manager generates, ``[core] test_connection =
Enabled``, the provider's plugin mounted at ``/twilio_sms``, and the store in a SQLite file of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import airflow_bin, free_port

USERS = "admin:admin,alice:viewer:team_a,bob:viewer:team_b"
TEAMS = ("team_a", "team_b")


class AirflowApiServer:
    """Prepares an AIRFLOW_HOME from an already migrated metadata DB, then runs ``airflow api-server``."""

    def __init__(self, home: Path, migrated_db: Path, *, extra_env: dict[str, str]):
        self.home = home
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "api-server.log"
        self.proc: subprocess.Popen | None = None
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_db, home / "airflow.db")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__FERNET_KEY": os.environ["AIRFLOW__CORE__FERNET_KEY"],
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": USERS,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__MULTI_TEAM": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": "browser-test-secret-key",
            "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-jwt-secret-0123456789abcdef",
            **extra_env,
        })
        self.env = env

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([airflow_bin(), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def create_teams(self) -> None:
        """``airflow teams create`` for each team, in parallel (each CLI start costs seconds)."""
        procs = [subprocess.Popen([airflow_bin(), "teams", "create", team], env=self.env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for team in TEAMS]
        for team, proc in zip(TEAMS, procs, strict=True):
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"airflow teams create {team} failed:\n{out[-2000:]}"

    def start(self, timeout: float = 120) -> AirflowApiServer:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [airflow_bin(), "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"airflow api-server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"airflow api-server did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)
        return self

    def passwords(self) -> dict[str, str]:
        """The passwords SimpleAuthManager generated for the configured users."""
        return json.loads((self.home / "passwords.json").read_text())

    def token(self, username: str) -> str:
        """A REST token from ``POST /auth/token`` (the real login endpoint)."""
        body = json.dumps({"username": username, "password": self.passwords()[username]}).encode()
        request = urllib.request.Request(f"{self.base_url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())["access_token"]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the api-server's own process group (start_new_session)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
