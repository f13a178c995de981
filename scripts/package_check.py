"""The package as users get it: build, check, install the wheel into a clean virtualenv, run Airflow there;
then install the lowest versions the dependency floors allow and run a subset of the tests on them.

    .venv/bin/python scripts/package_check.py [--skip-floors] [--keep]

scripts/test.sh runs it under CI (CI=true) before the test suite. Each step fails loudly with what was
missing; every subprocess has a time limit. Needs only the .venv that scripts/bootstrap.sh makes (uv,
build and twine come with its test extra) and the package registries; uv's cache makes reinstalls fast.

1. ``python -m build`` (sdist and wheel) from a copy of the files git tracks, so stray files and egg-info
   in the work tree cannot leak in; ``twine check --strict``.
2. The wheel holds every file of the package that git tracks (UI static files, migrations, ``py.typed``),
   the licence and both entry points, and nothing else: no tests, benches or example DAGs.
3. A clean virtualenv gets the wheel (not editable) with Airflow, pinned to the versions of .venv so the
   cache serves them; in a fresh AIRFLOW_HOME, outside the repository: ``airflow providers list``,
   ``airflow plugins``, ``airflow db migrate``, ``airflow twilio-sms db check``, then the stand-in
   (``airflow twilio-sms simulator``) and ``airflow dags test twilio_sms_bulk_mapped`` against it.
4. Floors: another virtualenv with ``uv pip install --resolution lowest-direct`` of the wheel and its
   extras (every direct dependency at its declared floor), then FLOOR_TESTS with that interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "airflow_provider_twilio_sms"
DIST_NAME = "airflow-provider-twilio-sms"
VENV_BIN = Path(sys.executable).parent
UV = str(VENV_BIN / "uv")
# Tests run on the floors: the unit tests (every module against twilio, phonenumbers, cryptography,
# SQLAlchemy, alembic, FastAPI and Airflow's SDK), then a real Airflow CLI and migrations, the hook against
# Twilio's contract and the stand-in, and operators under dag.test(). Not the browser, load or end-to-end
# suites: minutes each, and no dependency they use is left out above.
FLOOR_TESTS = ["tests/unit", "tests/integration/test_airflow_provider.py", "tests/integration/hooks",
               "tests/integration/operators/test_send_sms_operator.py"]
REQUIRED_IN_WHEEL = [  # named so that a failure says what is missing, beyond "a tracked file is absent"
    f"{PACKAGE}/py.typed", f"{PACKAGE}/webhook/static/ui/index.html", f"{PACKAGE}/webhook/static/ui/app.js",
    f"{PACKAGE}/webhook/static/ui/app.css", f"{PACKAGE}/store/migrations/alembic.ini",
    f"{PACKAGE}/store/migrations/env.py", f"{PACKAGE}/store/migrations/script.py.mako",
]


class CheckFailed(Exception):
    pass


def step(name: str):
    def wrap(func):
        def run(*args, **kwargs):
            started = time.monotonic()
            print(f"package check: {name} ...", flush=True)
            result = func(*args, **kwargs)
            print(f"package check: {name} ok ({time.monotonic() - started:.1f} s)", flush=True)
            return result
        return run
    return wrap


def sh(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None,
       check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            check=False)
    if check and result.returncode != 0:
        raise CheckFailed(f"`{' '.join(cmd)}` exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                          f"{result.stderr[-3000:]}")
    return result


def tracked_files() -> list[str]:
    out = sh(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
             timeout=60).stdout
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


@step("build sdist and wheel from the tracked files")
def build(work: Path) -> tuple[Path, Path]:
    source = work / "source"
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = work / "dist"
    sh([sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(dist), str(source)], timeout=300,
       env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    sh([str(VENV_BIN / "twine"), "check", "--strict", str(wheel), str(sdist)], timeout=120)
    return wheel, sdist


def package_version() -> str:
    text = (REPO / "src" / PACKAGE / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, flags=re.MULTILINE).group(1)


@step("wheel and sdist contents")
def check_contents(wheel: Path, sdist: Path) -> None:
    version = package_version()
    if not wheel.name.startswith(f"{PACKAGE}-{version}-"):
        raise CheckFailed(f"the wheel {wheel.name} is not version {version} (__version__)")
    names = set(zipfile.ZipFile(wheel).namelist())
    info = f"{PACKAGE}-{version}.dist-info"
    expected = {f[len("src/"):] for f in tracked_files()
                if f.startswith(f"src/{PACKAGE}/") and not f.endswith((".pyc", ".pyo"))}
    problems = [f"missing from the wheel: {n}" for n in sorted(expected - names)]
    problems += [f"missing from the wheel: {n}" for n in REQUIRED_IN_WHEEL if n not in names]
    strays = sorted(n for n in names - expected if not n.startswith(f"{info}/"))
    problems += [f"in the wheel but not a tracked package file: {n}" for n in strays]
    problems += [f"no test, bench or example may ship: {n}" for n in names
                 if re.search(r"(^|/)(tests?|bench|dags_examples|conftest\.py)(/|$)", n)]
    if f"{info}/licenses/LICENSE" not in names:
        problems.append("the wheel has no dist-info/licenses/LICENSE")
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    for group, value in (("apache_airflow_provider", f"{PACKAGE}.get_provider_info:get_provider_info"),
                         ("airflow.plugins", f"{PACKAGE}.plugins.twilio_sms:TwilioSmsPlugin")):
        if f"[{group}]" not in entry_points or value not in entry_points:
            problems.append(f"entry point group {group} -> {value} is missing")
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    for line in (f"Version: {version}", "License-Expression: Apache-2.0", "License-File: LICENSE"):
        if line not in metadata.splitlines():
            problems.append(f"METADATA lacks {line!r}")
    import tarfile

    with tarfile.open(sdist) as archive:
        in_sdist = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    wanted = ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", f"src/{PACKAGE}/py.typed")
    problems += [f"missing from the sdist: {n}" for n in wanted if n not in in_sdist]
    if problems:
        raise CheckFailed("\n".join(problems))
    print(f"  {wheel.name}: {len(names)} files, all {len(expected)} tracked package files, no strays")


def venv(path: Path) -> Path:
    sh([UV, "venv", "--quiet", "--python", sys.executable, str(path)], timeout=120)
    return path / "bin" / "python"


def pins(exclude: str) -> Path:
    """The versions installed in .venv, as constraints (the cache has them all)."""
    frozen = sh([UV, "pip", "freeze", "--python", sys.executable], timeout=60).stdout.splitlines()
    path = Path(tempfile.mkstemp(prefix="pins-", suffix=".txt")[1])
    path.write_text("\n".join(p for p in frozen if "==" in p and not p.lower().startswith(exclude)) + "\n")
    return path


@step("install the wheel into a clean virtualenv with Airflow")
def install_wheel(work: Path, wheel: Path) -> Path:
    python = venv(work / "wheel-venv")
    sh([UV, "pip", "install", "--quiet", "--python", str(python), "--constraint", str(pins(DIST_NAME)),
        f"{DIST_NAME}[webhook] @ {wheel.as_uri()}"], timeout=600)
    probe = (f"import {PACKAGE}, json, importlib.metadata as m; print(json.dumps([{PACKAGE}.__file__, "
             f"m.distribution('{DIST_NAME}').read_text('direct_url.json')]))")
    where = sh([str(python), "-c", probe], timeout=60, cwd=work).stdout
    location, direct_url = json.loads(where)
    if not location.startswith(str(work / "wheel-venv")) or '"editable": true' in (direct_url or ""):
        raise CheckFailed(f"the package imports from {location}, not from the installed wheel")
    return python


def _airflow_env(work: Path) -> dict[str, str]:
    home = work / "airflow-home"
    home.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV", "TWILIO_SMS"))}
    return {**keep, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags_examples"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_CONN_TWILIO_SMS_STORE_DEFAULT": json.dumps(
                {"conn_type": "generic", "extra": {"sqlalchemy_url": f"sqlite:///{home / 'airflow.db'}"}})}


@step("airflow commands with the installed wheel")
def run_airflow(work: Path, python: Path) -> None:
    airflow = str(python.with_name("airflow"))
    env = _airflow_env(work)
    cwd = work / "airflow-home"  # outside the repository: nothing from src/ can be imported

    providers = json.loads(_json_tail(sh([airflow, "providers", "list", "-o", "json"], env=env, cwd=cwd,
                                         timeout=300).stdout))
    ours = [p for p in providers if p["package_name"] == DIST_NAME]
    if [p["version"] for p in ours] != [package_version()]:
        raise CheckFailed(f"airflow providers list shows {ours or 'no'} {DIST_NAME}")
    for lazy in ("True", "False"):
        listing = sh([airflow, "plugins", "--verbose", "-o", "json"], timeout=300, cwd=cwd,
                     env={**env, "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": lazy})
        output = listing.stdout + listing.stderr
        names = [p["name"] for p in json.loads(_json_tail(listing.stdout))]
        if names.count("twilio_sms") != 1 or "already registered" in output:
            raise CheckFailed(f"airflow plugins (lazy_discover_providers={lazy}) lists twilio_sms "
                              f"{names.count('twilio_sms')} times:\n{output[-3000:]}")
    sh([airflow, "db", "migrate"], env=env, cwd=cwd, timeout=600)
    check = sh([airflow, "twilio-sms", "db", "check"], env=env, cwd=cwd, timeout=300)
    if "newest revision" not in check.stdout:
        raise CheckFailed(f"airflow twilio-sms db check said: {check.stdout[-2000:]}")
    _example_dag(airflow, env, cwd)


def _json_tail(stdout: str) -> str:
    """The JSON document in a command's output (``--verbose`` log lines may come first)."""
    for line in stdout.splitlines():
        if line.startswith(("[", "{")):
            return line
    raise CheckFailed(f"no JSON in the output:\n{stdout[-2000:]}")


def _example_dag(airflow: str, env: dict[str, str], cwd: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sim = subprocess.Popen([airflow, "twilio-sms", "simulator", "serve", "--port", str(port)], env=env,
                           cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = _read_banner(sim)
        if not banner[0].startswith("This is NOT Twilio"):
            raise CheckFailed(f"the stand-in does not say first that it is not Twilio: {banner}")
        account = re.search(r"account SID: (\S+)", "".join(banner)).group(1)
        token = re.search(r"auth token:  (\S+)", "".join(banner)).group(1)
        dag_env = {**env, "AIRFLOW_CONN_TWILIO_SMS_DEFAULT": json.dumps({
            "conn_type": "twilio_sms", "login": account, "password": token,
            "extra": {"from_number": "+15005550006", "api_base_url": f"http://127.0.0.1:{port}"}})}
        conf = json.dumps({"rate_limit": "100/1m"})
        run = sh([airflow, "dags", "test", "twilio_sms_bulk_mapped", "-c", conf], env=dag_env, cwd=cwd,
                 timeout=600)
        status = sh([airflow, "twilio-sms", "simulator", "status", "--port", str(port)], env=env, cwd=cwd,
                    timeout=300)
        created = json.loads(status.stdout)["counts"].get("create", 0)
        if created != 7:
            raise CheckFailed(f"the bulk DAG made {created} sends, not 7:\n{run.stdout[-3000:]}\n"
                              f"{run.stderr[-3000:]}")
        print(f"  twilio_sms_bulk_mapped sent 7 messages to the stand-in on port {port}")
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            sim.kill()


def _read_banner(sim: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while not any(line.lstrip().startswith("control:") for line in lines):
        line = sim.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise CheckFailed(f"the stand-in did not start: {''.join(lines)[-2000:]}")
        lines.append(line)
    return lines


FLOOR_EXTRAS = ("test", "webhook", "postgres")


def wheel_requirements(wheel: Path, extras: tuple[str, ...]) -> list[str]:
    """The wheel's Requires-Dist for its base and ``extras``, without the extra markers."""
    from packaging.requirements import Requirement

    text = zipfile.ZipFile(wheel).read(f"{PACKAGE}-{package_version()}.dist-info/METADATA").decode()
    wanted = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist: "):
            requirement = Requirement(line[len("Requires-Dist: "):])
            marker = str(requirement.marker or "")
            if not marker or any(requirement.marker.evaluate({"extra": e}) for e in extras):
                requirement.marker = None
                wanted.append(str(requirement))
    if not wanted:
        raise CheckFailed("the wheel's METADATA names no dependency")
    return wanted


def check_floors_installed(python: Path, requirements: list[str]) -> None:
    """Each dependency is installed at exactly its declared floor (else the floors are not what is tested)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    freeze = sh([UV, "pip", "freeze", "--python", str(python)], timeout=60).stdout
    frozen = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    installed = {canonicalize_name(name): Version(version) for name, version in frozen.items()}
    wrong, seen = [], []
    for text in requirements:
        requirement = Requirement(text)
        floors = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        have = installed.get(canonicalize_name(requirement.name))
        if floors and have != max(floors):
            wrong.append(f"{requirement.name}: floor {max(floors)}, installed {have}")
        seen.append(f"{requirement.name}=={have}")
    print("  floors installed: " + ", ".join(seen))
    if wrong:
        raise CheckFailed("dependencies not at their floors:\n" + "\n".join(wrong))


@step("floors: lowest direct dependencies and a test subset")
def floors(work: Path, wheel: Path) -> None:
    python = venv(work / "floors-venv")
    # lowest-direct lowers only the requirements named on the command line: name the wheel's own
    # dependencies (those of its extras too) there, or they would be transitive and resolved highest.
    sh([UV, "pip", "install", "--quiet", "--python", str(python), "--resolution", "lowest-direct",
        f"{DIST_NAME}[{','.join(FLOOR_EXTRAS)}] @ {wheel.as_uri()}",
        *wheel_requirements(wheel, FLOOR_EXTRAS)], timeout=600)
    check_floors_installed(python, wheel_requirements(wheel, FLOOR_EXTRAS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *FLOOR_TESTS],
                            cwd=REPO, env=env, timeout=900, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"the test subset failed on the dependency floors (exit {result.returncode})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-floors", action="store_true", help="only build, check and run the wheel")
    parser.add_argument("--only-floors", action="store_true", help="build, then only the floors")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed) for a look")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="twilio-sms-package-check-"))
    started = time.monotonic()
    try:
        wheel, sdist = build(work)
        check_contents(wheel, sdist)
        if not options.only_floors:
            run_airflow(work, install_wheel(work, wheel))
        if not options.skip_floors:
            floors(work, wheel)
    except (CheckFailed, subprocess.TimeoutExpired) as err:
        print(f"\nPACKAGE CHECK FAILED: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        if options.keep:
            print(f"package check: work folder kept at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"package check: all passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
