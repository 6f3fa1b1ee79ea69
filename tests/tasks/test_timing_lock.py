"""The machine's timing lock: benchmarks alone, other model steps beside each other, and a
waiting benchmark is not starved. flock is per open file, so threads contend as processes do."""

import threading

import pytest
from accelflow.tasks import timing_lock


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_LOCK_DIR", str(tmp_path))


def hold_in_thread(exclusive: bool, waits: list):
    """Take the lock in a thread; returns (acquired, release) events."""
    acquired, release = threading.Event(), threading.Event()

    def run():
        with timing_lock.holding("cpu", exclusive, on_wait=lambda: waits.append(exclusive)):
            acquired.set()
            release.wait(30)

    threading.Thread(target=run, daemon=True).start()
    return acquired, release


def test_steps_share_the_lock():
    waits = []
    first, release_first = hold_in_thread(False, waits)
    second, release_second = hold_in_thread(False, waits)
    assert first.wait(10) and second.wait(10)
    assert waits == []
    release_first.set(), release_second.set()


def test_a_benchmark_waits_for_running_steps_and_then_runs_alone():
    waits = []
    step, release_step = hold_in_thread(False, waits)
    assert step.wait(10)
    bench, release_bench = hold_in_thread(True, waits)
    assert not bench.wait(0.6), "the benchmark started while a step ran"
    assert waits == [True]
    release_step.set()
    assert bench.wait(10)
    later_step, release_later = hold_in_thread(False, waits)
    assert not later_step.wait(0.6), "a step started during the benchmark"
    release_bench.set()
    assert later_step.wait(10)
    release_later.set()


def test_a_waiting_benchmark_stops_new_steps_from_starting():
    """The turnstile: steps that keep coming cannot starve the benchmark."""
    waits = []
    step, release_step = hold_in_thread(False, waits)
    assert step.wait(10)
    bench, release_bench = hold_in_thread(True, waits)
    assert not bench.wait(0.4)
    newcomer, release_newcomer = hold_in_thread(False, waits)
    assert not newcomer.wait(0.6), "a new step overtook the waiting benchmark"
    release_step.set()
    assert bench.wait(10) and not newcomer.is_set()
    release_bench.set()
    assert newcomer.wait(10)
    release_newcomer.set()


def test_devices_have_their_own_lock(tmp_path):
    assert timing_lock.lock_path("cpu") != timing_lock.lock_path("cuda:0")
    assert timing_lock.lock_path("cuda:0").startswith(str(tmp_path))
