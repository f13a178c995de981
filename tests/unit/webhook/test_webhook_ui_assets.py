"""The page's files are read through importlib.resources as Python 3.10 defines Traversable."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from airflow_provider_twilio_sms.webhook import ui


class OneNameTraversable:
    """A resource folder as Python 3.10's Traversable protocol (and a zip-imported package) offers it:
    ``joinpath`` takes one name (several names came with Python 3.11)."""

    def __init__(self, path: Path):
        self._path = path

    def joinpath(self, child: str) -> OneNameTraversable:
        return OneNameTraversable(self._path / child)

    def __truediv__(self, child: str) -> OneNameTraversable:
        return self.joinpath(child)

    def read_bytes(self) -> bytes:
        return self._path.read_bytes()


@pytest.mark.parametrize("name", sorted(ui.FILES))
def test_each_page_file_is_read_with_one_name_per_step(monkeypatch, name):
    real = resources.files("airflow_provider_twilio_sms.webhook")
    expected = real.joinpath("static").joinpath("ui").joinpath(name).read_bytes()
    package_dir = Path(str(real))
    monkeypatch.setattr(ui.resources, "files", lambda package: OneNameTraversable(package_dir))
    assert ui._read(name) == expected
    assert expected  # the file is there and not empty
