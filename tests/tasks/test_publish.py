"""Results published to a local folder or to S3 (a real moto server): whole or not at all."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
from accelflow.storage.store import Store
from accelflow.tasks import package, publish

from tests.files import write_files


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("ACCELFLOW_SCRATCH", str(tmp_path / "scratch"))
    if request.param == "local":
        return str(tmp_path / "results")
    return request.getfixturevalue("s3_repo_uri").replace("/repo", "/results")


def _staged(output: str, files: dict[str, bytes]) -> package.Staging:
    staging = package.start_staging(output)
    write_files(staging.path, files)
    return staging


FILES = {"model/manifest.json": b"{}", "model/model.onnx": os.urandom(5000),
         "report.json": json.dumps({"speedup": 1.5}).encode(), "report.md": b"# r", "report.html": b"<p>"}


def test_published_result_has_every_file_and_its_manifest_last(output, tmp_path):
    run_id = str(uuid.uuid4())
    uri = publish.publish(_staged(output, FILES), output, "job-bert-v1#1", run_id)
    assert uri.endswith("/job-bert-v1-1")
    record = publish.read_manifest(uri)
    assert record["flow_run_id"] == run_id and record["files"] == {k: len(v) for k, v in sorted(FILES.items())}
    assert publish.read_report(uri) == {"speedup": 1.5}
    local = publish.local_copy(uri)
    for rel, data in FILES.items():
        assert open(os.path.join(local, *rel.split("/")), "rb").read() == data
    scratch = tmp_path / "scratch"
    assert not scratch.exists() or os.listdir(scratch) == []  # the staging folder is gone


def test_same_name_twice_gets_a_second_folder(output):
    first = publish.publish(_staged(output, FILES), output, "job", str(uuid.uuid4()))
    second = publish.publish(_staged(output, FILES), output, "job", str(uuid.uuid4()))
    assert (first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]) == ("job", "job-2")


def test_concurrent_publishes_of_one_name_never_share_a_folder(output):
    uris, errors = [], []

    def one():
        try:
            uris.append(publish.publish(_staged(output, FILES), output, "race", str(uuid.uuid4())))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(set(uris)) == 4
    assert len({publish.read_manifest(u)["flow_run_id"] for u in uris}) == 4


def test_a_folder_without_manifest_is_not_a_result(output):
    store = Store(output)
    store.write(store.path("half", "model", "model.onnx"), b"partial")
    with pytest.raises(publish.ResultError, match="no finished result"):
        publish.read_manifest(store.uri_of(store.path("half")))
    with pytest.raises(publish.ResultError, match="no finished result"):
        publish.read_report(store.uri_of(store.path("half")))


def test_dead_claims_are_removed_live_ones_kept(s3_repo_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_SCRATCH", str(tmp_path / "scratch"))
    output = s3_repo_uri.replace("/repo", "/results")
    store = Store(output)
    for name, run in (("dead", "run-dead"), ("live", "run-live")):
        store.create_json(store.path(name, publish.CLAIM), {"kind": publish.KIND, "flow_run_id": run})
        store.write(store.path(name, "model", "model.onnx"), b"half")
    uri = publish.publish(_staged(output, FILES), output, "next", "run-next",
                          claim_is_stale=lambda claim: claim["flow_run_id"] == "run-dead")
    assert store.files(store.path("dead")) == {}
    assert set(store.files(store.path("live"))) == {publish.CLAIM, "model/model.onnx"}
    assert publish.read_manifest(uri)["flow_run_id"] == "run-next"


def test_an_upload_cut_off_leaves_nothing_a_reader_takes(s3_server, s3_repo_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("ACCELFLOW_S3_TIMEOUT", "1")
    output = s3_repo_uri.replace("/repo", "/results")
    many = {f"model/part-{i:03d}.bin": os.urandom(20_000) for i in range(400)}
    staging = _staged(output, many)
    store = Store(output)
    pauser = threading.Thread(target=_pause_when_uploading, args=(s3_server, store), daemon=True)
    pauser.start()
    try:
        with pytest.raises(publish.ResultError):
            publish.publish(staging, output, "cut", "run-cut")
    finally:
        pauser.join(60)
        s3_server.resume()
    monkeypatch.setenv("ACCELFLOW_S3_TIMEOUT", "15")
    with pytest.raises(publish.ResultError, match="no finished result"):
        publish.read_manifest(store.uri_of(store.path("cut")))
    assert not os.path.exists(staging.path)  # the local staging is gone too
    publish.remove_dead_claims(store, lambda claim: claim["flow_run_id"] == "run-cut")
    assert store.files(store.path("cut")) == {}


def _pause_when_uploading(server, store: Store) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(store.files(store.path("cut"))) >= 5:
            server.pause()
            return
        time.sleep(0.01)


def test_delete_checks_the_run_and_the_trusted_location(output, tmp_path):
    run_id = str(uuid.uuid4())
    uri = publish.publish(_staged(output, FILES), output, "to-delete", run_id)
    with pytest.raises(publish.ResultError, match="not under a configured results location"):
        publish.delete(uri, run_id, [str(tmp_path / "elsewhere")])
    with pytest.raises(publish.ResultError, match="belongs to flow run"):
        publish.delete(uri, str(uuid.uuid4()), [output])
    with pytest.raises(publish.ResultError, match="not under"):
        publish.delete(output, run_id, [output])  # the location itself is never a result
    assert publish.read_manifest(uri)["flow_run_id"] == run_id  # refused deletes removed nothing
    assert sorted(publish.delete(uri, run_id, [output])) == sorted(FILES)
    assert Store(uri).files(Store(uri).root) == {}


def test_delete_never_follows_a_file_list_out_of_the_result(tmp_path):
    output = str(tmp_path / "results")
    victim = tmp_path / "results" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    folder = tmp_path / "results" / "evil"
    folder.mkdir()
    (folder / publish.RESULT_MANIFEST).write_text(json.dumps(
        {"kind": publish.KIND, "flow_run_id": "r", "files": {"../victim.txt": 7, "/etc/passwd": 1}}))
    with pytest.raises(publish.ResultError, match="malformed"):
        publish.read_manifest(str(folder))
    publish.delete(str(folder), "r", [output])
    assert victim.read_text() == "keep me"


def test_trusted_roots_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ACCELFLOW_RESULTS", "s3://b/results")
    monkeypatch.setenv("ACCELFLOW_RESULT_ROOTS", "/srv/a, /srv/b,")
    assert publish.trusted_roots(["s3://b/shared", None]) == ["s3://b/results", "/srv/a", "/srv/b", "s3://b/shared"]
