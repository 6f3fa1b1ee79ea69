"""core/quotas.py: the worker operator's caps, their defaults and their environment variables."""

from __future__ import annotations

import pytest
from accelflow.core import quotas
from accelflow.core.errors import SpecError

CAPS = [
    (quotas.max_shape_points, "ACCELFLOW_MAX_SHAPE_POINTS", 32, "100", 100),
    (quotas.max_input_bytes, "ACCELFLOW_MAX_INPUT_GB", 4 * 2**30, "0.5", 2**29),
    (quotas.max_samples_bytes, "ACCELFLOW_MAX_SAMPLES_GB", 4 * 2**30, "16", 16 * 2**30),
    (quotas.max_fetch_bytes, "ACCELFLOW_MAX_FETCH_GB", 64 * 2**30, "1e-6", 1073),
]


@pytest.mark.parametrize("cap, var, default, setting, value", CAPS)
def test_defaults_and_overrides(monkeypatch, cap, var, default, setting, value):
    monkeypatch.delenv(var, raising=False)
    assert cap() == default
    monkeypatch.setenv(var, setting)
    assert cap() == value  # read at each use: no restart needed
    monkeypatch.setenv(var, " ")
    assert cap() == default


@pytest.mark.parametrize("cap, var, default, setting, value", CAPS)
@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "ten"])
def test_a_bad_setting_is_refused_naming_the_variable(monkeypatch, cap, var, default, setting, value, bad):
    monkeypatch.setenv(var, bad)
    with pytest.raises(SpecError, match=f"{var}='{bad}' is not a positive"):
        cap()


def test_size_text():
    assert [quotas.size_text(n) for n in (12, 2048, 3 * 2**20, 6 * 2**30, 2**41)] == [
        "12 bytes", "2.0 KiB", "3.0 MiB", "6.0 GiB", "2.0 TiB"]
