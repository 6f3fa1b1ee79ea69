"""storage/retry.py: a storage operation retried through transient failures, with backoff, and
anything else raised at once."""

from __future__ import annotations

import socket

import pytest
from accelflow.storage.retry import is_transient, with_retries
from accelflow.storage.store import Store


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setenv("ACCELFLOW_STORAGE_RETRIES", "4")
    monkeypatch.setenv("ACCELFLOW_STORAGE_BACKOFF", "0.01")


def _failing(times: int, error: BaseException, result="done"):
    calls = []

    def action():
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return action, calls


def test_transient_failures_are_retried_with_a_doubling_wait(capfd):
    action, calls = _failing(2, ConnectionError("reset"))
    assert with_retries(action, "save m@v1") == "done" and len(calls) == 3
    err = capfd.readouterr().err
    assert ("storage unreachable while trying to save m@v1 (ConnectionError); retrying in 0.01 s "
            "(attempt 2 of 4)") in err
    assert "retrying in 0.02 s (attempt 3 of 4)" in err


def test_a_refusal_is_raised_at_once(capfd):
    action, calls = _failing(1, PermissionError("denied"))
    with pytest.raises(PermissionError):
        with_retries(action, "save")
    assert len(calls) == 1 and "retrying" not in capfd.readouterr().err


def test_a_store_that_stays_away_fails_after_the_configured_attempts(monkeypatch):
    monkeypatch.setenv("ACCELFLOW_STORAGE_RETRIES", "3")
    action, calls = _failing(10, TimeoutError("no answer"))
    with pytest.raises(TimeoutError):
        with_retries(action, "fetch")
    assert len(calls) == 3
    monkeypatch.setenv("ACCELFLOW_STORAGE_RETRIES", "0")  # at least one attempt
    action, calls = _failing(10, TimeoutError("no answer"))
    with pytest.raises(TimeoutError):
        with_retries(action, "fetch")
    assert len(calls) == 1


def test_an_attempt_that_had_landed_is_not_repeated():
    """The first attempt's answer was lost; before retrying, the check finds it done."""
    action, calls = _failing(1, ConnectionError("answer lost"))
    checks = []

    def landed():
        checks.append(1)
        return "registered"

    assert with_retries(action, "add", landed) == "registered"
    assert len(calls) == 1 and len(checks) == 1


def test_the_check_before_a_retry_may_find_nothing():
    action, calls = _failing(1, ConnectionError("reset"))
    assert with_retries(action, "add", lambda: None) == "done" and len(calls) == 2


def test_what_counts_as_transient():
    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert not is_transient(FileNotFoundError()) and not is_transient(ValueError("bad"))
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("while listing") from inner
    except RuntimeError as outer:
        assert is_transient(outer)  # what it was raised from counts
    looped = ValueError("a")
    looped.__context__ = ValueError("b")
    looped.__context__.__context__ = looped
    assert not is_transient(looped)  # a cycle of contexts ends


def test_an_s3_endpoint_nobody_answers_is_transient(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("ACCELFLOW_S3_TIMEOUT", "2")
    monkeypatch.setenv("ACCELFLOW_STORAGE_RETRIES", "2")
    store = Store("s3://bucket/repo")
    with pytest.raises(Exception) as err:
        with_retries(lambda: store.read_bytes(store.path("index.json")), "read the index")
    assert is_transient(err.value), repr(err.value)
