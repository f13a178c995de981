"""The repository is self-contained: a fresh clone with no sibling folders has all the test data it needs.

Twilio's OpenAPI contract is vendored under tests/contract/twilio-oai with its MIT licence and the commit
it came from; nothing in the repository reads files from outside it (such as a ``../shared`` folder).
"""

from __future__ import annotations

import hashlib
import json
import re

from conftest import REPO, TWILIO_OAI

OAI_DIR = REPO / "tests" / "contract" / "twilio-oai"
# sha256 of twilio/twilio-oai spec/json/twilio_api_v2010.json at d50069b44ea8cd23141385bdb6db48f16ff75bb5.
OAI_SHA256 = "99cae87a6bb1725f71363364cbd30282a13140374b2d5f9bdd5bdfa5d4c8a6d7"
SKIP_DIRS = {".git", ".venv", ".tools", "node_modules", "__pycache__", "build", "dist", "test-output"}
OUTSIDE = re.compile(r"""parents?(\[\d\])?\s*/\s*["']shared["']|\.\./shared\b|/work/shared\b""")


def _tracked_text_files():
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix in {".py", ".sh", ".md", ".toml", ".cfg", ".ini", ".js", ".yml", ".yaml"} \
                or path.parent.name == ".ci":
            yield path


def test_contract_is_vendored_inside_the_repository():
    assert TWILIO_OAI.is_file()
    assert TWILIO_OAI.resolve().is_relative_to(REPO.resolve())
    assert hashlib.sha256(TWILIO_OAI.read_bytes()).hexdigest() == OAI_SHA256, "vendored contract was edited"
    spec = json.loads(TWILIO_OAI.read_text())
    assert spec["openapi"].startswith("3.")
    assert "post" in spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]


def test_contract_keeps_its_licence_and_provenance():
    licence = (OAI_DIR / "LICENSE").read_text()
    assert licence.startswith("MIT License")
    assert "Twilio, Inc." in licence
    readme = (OAI_DIR / "README.md").read_text()
    assert "github.com/twilio/twilio-oai" in readme
    assert "d50069b44ea8cd23141385bdb6db48f16ff75bb5" in readme


def test_nothing_reads_files_beside_the_repository():
    offenders = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _tracked_text_files() if path != OAI_DIR / "README.md"
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line) and path.name != "test_self_contained.py"
    ]
    assert not offenders, "files outside the repository are read:\n" + "\n".join(offenders)
