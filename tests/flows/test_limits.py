"""flows/limits.py: a task's limits are the request's, capped by the worker's."""

from __future__ import annotations

import pytest
from accelflow.core.errors import SpecError
from accelflow.core.quotas import DEFAULT_TIME_LIMIT_S, machine_memory_gib
from accelflow.flows.limits import task_limits


def test_defaults_are_the_workers(monkeypatch):
    monkeypatch.delenv("ACCELFLOW_TIME_LIMIT", raising=False)
    monkeypatch.delenv("ACCELFLOW_MEMORY_LIMIT_GB", raising=False)
    cpu = task_limits(None, None, "cpu")
    assert (cpu.seconds, cpu.memory_gib, cpu.asked) == (DEFAULT_TIME_LIMIT_S, machine_memory_gib(), (False, False))
    assert 1 < machine_memory_gib() < 1 << 20
    assert task_limits(None, None, "cpu-amx").memory_gib == machine_memory_gib()
    assert task_limits(None, None, "h100").memory_gib is None  # CUDA reserves more address space than it uses


def test_a_request_may_ask_for_less_never_more(monkeypatch):
    monkeypatch.setenv("ACCELFLOW_TIME_LIMIT", "600")
    monkeypatch.setenv("ACCELFLOW_MEMORY_LIMIT_GB", "8")
    less = task_limits(60, 2, "cpu")
    assert (less.seconds, less.memory_gib, less.asked) == (60, 2, (True, True))
    more = task_limits(6000, 64, "cpu")
    assert (more.seconds, more.memory_gib, more.asked) == (600, 8, (False, False))


def test_zero_turns_a_worker_limit_off_and_nonsense_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELFLOW_TIME_LIMIT", "0")
    monkeypatch.setenv("ACCELFLOW_MEMORY_LIMIT_GB", "0")
    assert task_limits(None, None, "cpu").seconds is None and task_limits(None, None, "cpu").memory_gib is None
    assert task_limits(30, None, "cpu").seconds == 30
    monkeypatch.setenv("ACCELFLOW_TIME_LIMIT", "an hour")
    with pytest.raises(SpecError, match="ACCELFLOW_TIME_LIMIT='an hour' is not a number"):
        task_limits(None, None, "cpu")
