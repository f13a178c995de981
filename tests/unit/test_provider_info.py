"""get_provider_info() describes the provider the way Airflow's own providers do, and Airflow accepts it.

The schema is the ``provider_info.schema.json`` shipped inside the installed Airflow (apache-airflow-core),
the one ProvidersManager validates against, so a newer Airflow's stricter schema fails here first.
"""

from __future__ import annotations

import importlib
import inspect
import json
from importlib.resources import files

import jsonschema
import pytest

from airflow_provider_twilio_sms import __version__
from airflow_provider_twilio_sms.get_provider_info import get_provider_info

KINDS = ("operators", "sensors", "hooks", "triggers")


def _airflow_schema() -> dict:
    return json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())


def _base_class(kind: str) -> type:
    if kind == "operators":
        from airflow.sdk import BaseOperator
        return BaseOperator
    if kind == "sensors":
        from airflow.sdk import BaseSensorOperator
        return BaseSensorOperator
    if kind == "hooks":
        from airflow.sdk import BaseHook
        return BaseHook
    from airflow.triggers.base import BaseTrigger
    return BaseTrigger


def test_provider_info_validates_against_the_installed_airflow_schema():
    info = get_provider_info()
    jsonschema.validate(info, _airflow_schema())


def test_config_defaults_agree_with_the_code():
    """The defaults Airflow shows (provider info) are the ones the code falls back to (config.DEFAULTS)."""
    from airflow_provider_twilio_sms import config

    options = get_provider_info()["config"]["twilio_sms"]["options"]
    for name, default in config.DEFAULTS.items():
        # Airflow formats defaults with str.format, so a literal brace is written doubled.
        assert options[name]["default"].replace("{{", "{").replace("}}", "}") == default, name


def test_provider_info_lists_every_kind_of_component():
    info = get_provider_info()
    integrations = {i["integration-name"] for i in info["integrations"]}
    for kind in KINDS:
        assert info[kind], f"provider info lists no {kind}"
        for entry in info[kind]:
            assert entry["integration-name"] in integrations
            assert entry["python-modules"]
    assert info["notifications"]
    assert info["versions"][0] == __version__


@pytest.mark.parametrize("kind", KINDS)
def test_each_listed_module_defines_public_classes_of_its_kind(kind):
    """A listed module really holds that kind of class (a renamed module would otherwise go unnoticed)."""
    base = _base_class(kind)
    for entry in get_provider_info()[kind]:
        for module_name in entry["python-modules"]:
            own = _public_classes(importlib.import_module(module_name), base)
            assert own, f"{module_name} is listed under {kind} but defines no public {base.__name__}"


def test_each_listed_notifier_is_a_notifier_class():
    from airflow.sdk import BaseNotifier

    for path in get_provider_info()["notifications"]:
        module_name, _, class_name = path.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module_name), class_name), BaseNotifier)


def _public_classes(module, base: type) -> list[type]:
    return [obj for name, obj in vars(module).items()
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
            and issubclass(obj, base)]


def test_every_public_component_is_listed():
    """Every module of hooks/, operators/, sensors/, triggers/ defining a public class of that kind is in the
    provider info, and so is every public notifier class."""
    from airflow.sdk import BaseNotifier

    import airflow_provider_twilio_sms as package

    info = get_provider_info()
    root = files(package)
    for kind in KINDS:
        listed = {m for e in info[kind] for m in e["python-modules"]}
        for entry in root.joinpath(kind).iterdir():
            if entry.name.endswith(".py") and not entry.name.startswith("_"):
                module = importlib.import_module(f"airflow_provider_twilio_sms.{kind}.{entry.name[:-3]}")
                if _public_classes(module, _base_class(kind)):
                    assert module.__name__ in listed, f"{module.__name__} is missing from {kind}"
    notifiers = set()
    for entry in root.joinpath("notifications").iterdir():
        if entry.name.endswith(".py") and not entry.name.startswith("_"):
            module = importlib.import_module(f"airflow_provider_twilio_sms.notifications.{entry.name[:-3]}")
            notifiers |= {f"{module.__name__}.{c.__name__}" for c in _public_classes(module, BaseNotifier)}
    assert notifiers
    assert notifiers <= set(info["notifications"])


def test_the_plugin_is_registered_only_through_its_entry_point():
    """The provider-info ``plugins`` key is read besides the ``airflow.plugins`` entry point when
    ``[core] lazy_discover_providers`` is False: having both registered the plugin twice."""
    from importlib.metadata import entry_points

    assert "plugins" not in get_provider_info()
    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "twilio_sms"]
    assert entry.value == "airflow_provider_twilio_sms.plugins.twilio_sms:TwilioSmsPlugin"
