"""Warnings are signals: the test configuration (pyproject.toml) turns this package's deprecations and
Airflow's deprecation warnings into failures, and hides no other deprecation wholesale."""

from __future__ import annotations

import warnings

import pytest


def _warn(category: type[Warning], module: str) -> None:
    warnings.warn_explicit("deprecated thing", category, filename=f"{module.replace('.', '/')}.py", lineno=1,
                           module=module)


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning])
def test_a_deprecation_in_this_package_fails(category):
    with pytest.raises(category):
        _warn(category, "airflow_provider_twilio_sms.sending")


def test_airflow_deprecations_fail_whoever_triggers_them():
    from airflow.exceptions import AirflowProviderDeprecationWarning, RemovedInAirflow4Warning
    from airflow.sdk.exceptions import RemovedInAirflow4Warning as SdkRemovedInAirflow4Warning
    from airflow.utils.deprecation_tools import DeprecatedImportWarning

    for category in (RemovedInAirflow4Warning, SdkRemovedInAirflow4Warning, AirflowProviderDeprecationWarning,
                     DeprecatedImportWarning):
        with pytest.raises(category):
            _warn(category, "airflow_provider_twilio_sms.operators.sms")
        with pytest.raises(category):
            _warn(category, "some_dag_file")


def test_airflow_deprecations_airflow_itself_triggers_are_shown_not_raised():
    from airflow.utils.deprecation_tools import DeprecatedImportWarning

    with warnings.catch_warnings(record=True) as seen:
        _warn(DeprecatedImportWarning, "airflow.api_fastapi.core_api.services.ui.connections")
    assert len(seen) == 1


def test_other_deprecations_are_shown_not_hidden():
    with warnings.catch_warnings(record=True) as seen:
        _warn(DeprecationWarning, "some_third_party_library")
    assert [str(w.message) for w in seen] == ["deprecated thing"]
