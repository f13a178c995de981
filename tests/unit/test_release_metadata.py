"""One version, one changelog, one licence: the version is written once (``__version__``) and everything
else (the installed distribution's metadata, the provider info, the changelog) agrees with it."""

from __future__ import annotations

import re
from importlib.metadata import metadata, version

import tomllib

from airflow_provider_twilio_sms import __version__
from airflow_provider_twilio_sms.get_provider_info import get_provider_info

from conftest import REPO

DIST = "airflow-provider-twilio-sms"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_version_is_written_once_and_read_by_the_build():
    project = _pyproject()["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "airflow_provider_twilio_sms.__version__"}
    assert version(DIST) == __version__, "installed metadata is stale: run scripts/bootstrap.sh"
    assert get_provider_info()["versions"][0] == __version__


def test_the_changelog_starts_with_the_current_version():
    changelog = (REPO / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (\S+)", changelog, flags=re.MULTILINE)
    assert headings, "CHANGELOG.md has no '## <version>' heading"
    assert headings[0] == __version__, f"CHANGELOG.md's newest entry is {headings[0]}"


def test_the_licence_is_apache_2_in_the_file_and_the_metadata():
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License" in text
    assert _pyproject()["project"]["license"] == "Apache-2.0"
    assert metadata(DIST)["License-Expression"] == "Apache-2.0"
