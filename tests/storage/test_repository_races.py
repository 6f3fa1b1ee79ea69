"""The model repository under concurrent writers, hostile records and odd sources; on a local
folder and on S3 (a real moto server). Concurrent adds are real `accelflow repo add` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from accelflow.core.errors import RepositoryError
from accelflow.storage.repository import ModelRepository
from accelflow.storage.store import Store

from tests.files import tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRITERS = 4
FILES_EACH = 20


@pytest.fixture(params=["local", "s3"])
def repo_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "repo")
    return request.getfixturevalue("s3_repo_uri")  # sets the AWS environment the children inherit


def _make_source(folder, writer: int) -> str:
    """FILES_EACH files whose content says which writer they belong to."""
    for j in range(FILES_EACH):
        path = folder / ("weights" if j % 2 else "") / f"part-{j:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Big enough that four uploads overlap: the race is in the upload's duration.
        path.write_bytes(f"writer {writer} file {j}\n".encode() * (50 + j) + os.urandom(64 * 1024))
    return str(folder)


@pytest.fixture
def sources(tmp_path) -> list[str]:
    return [_make_source(tmp_path / f"src-{i}", i) for i in range(WRITERS)]


def _fetched(repo: ModelRepository, name: str, version: str, tmp_path) -> dict[str, bytes]:
    dest = tmp_path / f"fetched-{name}-{version}"
    repo.fetch(name, version, str(dest))
    return tree(dest)


# The child imports everything first and then waits for the go file, so the four adds start
# their uploads together instead of a process start-up (about a second) apart.
_CHILD = """
import os, sys, time
import accelflow.flows.cli.main, accelflow.storage.repository, s3fs
ready, go = sys.argv[1:3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
sys.exit(accelflow.flows.cli.main.main(sys.argv[3:]))
"""


def _start_add(uri: str, name: str, version: str, src: str, ready: str, go: str) -> subprocess.Popen:
    argv = ["repo", "add", name, version, src, "--source", "uploaded", "--format", "onnx", "--repo", uri]
    return subprocess.Popen([sys.executable, "-c", _CHILD, ready, go, *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_concurrently(uri: str, adds: list[tuple[str, str, str]], flags) -> list[tuple[int, str, str]]:
    """Run `accelflow repo add` once per (name, version, source), all at the same moment."""
    flags.mkdir()
    go = str(flags / "go")
    ready = [str(flags / f"ready-{i}") for i in range(len(adds))]
    procs = [_start_add(uri, *add, ready[i], go) for i, add in enumerate(adds)]
    deadline = time.monotonic() + 120  # against a hang only
    while not all(os.path.exists(r) for r in ready) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break  # a child died on start-up: its output tells why, below
        time.sleep(0.01)
    open(go, "w").close()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out, err))
    return results


def _uploads(repo: ModelRepository, name: str, version: str) -> list[str]:
    folder = repo.store.path("models", name, "versions", version)
    return [c for c in repo.store.children(folder) if c.startswith("files")]


# -- (a) one version, four writers ---------------------------------------------------------------


def test_concurrent_adds_of_one_version_exactly_one_wins(repo_uri, sources, tmp_path):
    results = _run_concurrently(repo_uri, [("m", "v1", src) for src in sources], tmp_path / "flags")
    codes = [rc for rc, _, _ in results]
    assert sorted(codes) == [0] + [2] * (WRITERS - 1), results
    winner = codes.index(0)
    for i, (rc, _, err) in enumerate(results):
        if i != winner:
            assert "already exists" in err and "m@v1" in err and "Traceback" not in err, err
    repo = ModelRepository(repo_uri)
    assert repo.show("m").versions == ["v1"]
    entry = repo.version("m", "v1")
    assert len(entry.files) == FILES_EACH
    assert _fetched(repo, "m", "v1", tmp_path) == tree(sources[winner])  # the winner's files, only
    # The losers removed their own uploads; what remains is the folder version.json names.
    assert _uploads(repo, "m", "v1") == [os.path.basename(entry.home)]


# -- (b) four versions of a new model, four writers -------------------------------------------


def test_concurrent_first_adds_of_different_versions_all_land(repo_uri, sources, tmp_path):
    versions = [f"v{i + 1}" for i in range(WRITERS)]
    results = _run_concurrently(repo_uri, [("fresh", v, src) for v, src in zip(versions, sources)], tmp_path / "flags")
    assert [rc for rc, _, _ in results] == [0] * WRITERS, results
    repo = ModelRepository(repo_uri)
    model = repo.show("fresh")
    assert model.versions == versions and [m.name for m in repo.list()] == ["fresh"]
    for version, src in zip(versions, sources):
        assert repo.version("fresh", version).model_id == model.id  # one model.json for all
        assert _fetched(repo, "fresh", version, tmp_path) == tree(src)


# -- (c) a writer that fails or loses never harms another ----------------------------------------


def _during_copy(monkeypatch, repo: ModelRepository, at_call: int, action) -> None:
    """Run `action(source_path)` just before `repo`'s `at_call`-th file copy: another writer's
    work, interleaved at a chosen point of this one (only the timing is arranged here)."""
    real, calls = repo.store.copy_file, []

    def copy_file(source, source_path, path):
        calls.append(source_path)
        if len(calls) == at_call:
            action(source_path)
        return real(source, source_path, path)

    monkeypatch.setattr(repo.store, "copy_file", copy_file)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_writer_failing_mid_copy_removes_only_its_own_files(repo_uri, sources, tmp_path, monkeypatch, version):
    other, failing = ModelRepository(repo_uri), ModelRepository(repo_uri)

    def commit_other_then_lose_a_source_file(source_path):
        other.add("m", "v1", sources[0], source="uploaded", format="onnx")
        os.remove(source_path)  # the failing writer's next file disappears

    _during_copy(monkeypatch, failing, 3, commit_other_then_lose_a_source_file)
    with pytest.raises(RepositoryError, match="could not add"):
        failing.add("m", version, sources[1], source="uploaded", format="onnx")
    repo = ModelRepository(repo_uri)
    assert repo.show("m").versions == ["v1"]
    assert _fetched(repo, "m", "v1", tmp_path) == tree(sources[0])
    assert _uploads(repo, "m", "v1") == [os.path.basename(repo.version("m", "v1").home)]
    assert _uploads(repo, "m", "v2") == []


def test_writer_losing_the_race_is_told_and_keeps_nothing(repo_uri, sources, tmp_path, monkeypatch):
    other, late = ModelRepository(repo_uri), ModelRepository(repo_uri)
    _during_copy(monkeypatch, late, 5, lambda _: other.add("m", "v1", sources[0], source="uploaded", format="onnx"))
    with pytest.raises(RepositoryError) as err:
        late.add("m", "v1", sources[1], source="uploaded", format="onnx")
    assert "m@v1 already exists" in str(err.value) and "another writer added it" in str(err.value)
    repo = ModelRepository(repo_uri)
    assert _fetched(repo, "m", "v1", tmp_path) == tree(sources[0])
    assert _uploads(repo, "m", "v1") == [os.path.basename(repo.version("m", "v1").home)]


def test_first_adds_racing_with_another_source_keep_the_first_model(repo_uri, sources, tmp_path, monkeypatch):
    other, late = ModelRepository(repo_uri), ModelRepository(repo_uri)
    _during_copy(monkeypatch, late, 2, lambda _: other.add("m", "v1", sources[0], source="uploaded", format="onnx"))
    with pytest.raises(RepositoryError, match="has source 'uploaded', not 'training'"):
        late.add("m", "v2", sources[1], source="training", format="onnx")
    repo = ModelRepository(repo_uri)
    model = repo.show("m")
    assert (model.versions, model.source) == (["v1"], "uploaded")
    assert _uploads(repo, "m", "v2") == []
    assert not repo.store.exists(repo.store.path("models", "m", "versions", "v2", "version.json"))
    assert _fetched(repo, "m", "v1", tmp_path) == tree(sources[0])


def test_retried_add_whose_first_attempt_landed_returns_it(repo_uri, sources):
    # tasks.save retries an add with the same version_id when an answer was lost.
    repo = ModelRepository(repo_uri)
    first = repo.add("m", "v1", sources[0], source="uploaded", format="onnx", version_id="a1b2c3d4")
    again = repo.add("m", "v1", sources[1], source="uploaded", format="onnx", version_id="a1b2c3d4")
    assert again == first
    with pytest.raises(RepositoryError, match="already exists"):
        repo.add("m", "v1", sources[1], source="uploaded", format="onnx", version_id="ffff0000")


# -- (d) records from storage are checked -------------------------------------------------------


@pytest.fixture
def stored(repo_uri, sources):
    repo = ModelRepository(repo_uri)
    repo.add("m", "v1", sources[0], source="uploaded", format="onnx")
    store = repo.store
    paths = {"version": store.path("models", "m", "versions", "v1", "version.json"),
             "model": store.path("models", "m", "model.json")}
    return repo, paths


@pytest.mark.parametrize("which, key, value, complaint", [
    ("version", "files", ["../../../../etc/passwd"], "file entry"),
    ("version", "files", ["/etc/passwd"], "file entry"),
    ("version", "files", ["weights//part-01.bin"], "file entry"),
    ("version", "files", "part-00.bin", "'files' is not a list"),
    ("version", "version", "../v1", "its version"),
    ("version", "version", "v2", "its version"),
    ("version", "id", "a/b", "its id"),
    ("version", "upload", "../../elsewhere", "its upload"),
    ("model", "id", "a/b", "its id"),
    ("model", "name", "../m", "its name"),
    ("model", "source", None, "'source' is not a string"),
])
def test_malformed_records_refused_on_read(stored, tmp_path, which, key, value, complaint):
    repo, paths = stored
    record = repo.store.read_json(paths[which])
    repo.store.write_json(paths[which], {**record, key: value})
    with pytest.raises(RepositoryError) as err:
        repo.fetch("m", "v1", str(tmp_path / "dest"))
    assert f"malformed {repo.store.uri_of(paths[which])}" in str(err.value) and complaint in str(err.value)
    assert not (tmp_path / "dest").exists()  # refused before anything was copied


def test_missing_keys_and_non_json_refused(stored):
    repo, paths = stored
    record = repo.store.read_json(paths["version"])
    repo.store.write_json(paths["version"], {k: v for k, v in record.items() if k != "files"})
    with pytest.raises(RepositoryError, match=r"version.json: lacks 'files'"):
        repo.version("m", "v1")
    repo.store.write(paths["version"], b"{not json")
    with pytest.raises(RepositoryError, match=r"malformed .*version.json"):
        repo.version("m", "v1")


# -- (e) links in a local source ---------------------------------------------------------------


def test_symlink_in_local_source_refused(repo_uri, sources, tmp_path):
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_text("aws_secret_access_key = do-not-upload-7e1")
    os.symlink(secret, os.path.join(sources[0], "weights", "creds"))
    repo = ModelRepository(repo_uri)
    with pytest.raises(RepositoryError) as err:
        repo.add("m", "v1", sources[0], source="uploaded", format="onnx")
    assert "weights/creds is a symbolic link" in str(err.value) and "copy the real file in" in str(err.value)
    assert "do-not-upload" not in str(err.value)
    assert repo.list() == [] and not repo.store.exists(repo.store.path("models"))


def test_symlinked_folder_in_local_source_refused(repo_uri, sources, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "private.txt").write_text("private")
    os.symlink(tmp_path / "outside", os.path.join(sources[0], "linked"))
    with pytest.raises(RepositoryError, match="linked is a symbolic link"):
        ModelRepository(repo_uri).add("m", "v1", sources[0], source="uploaded", format="onnx")


# -- (f) a source in a store -------------------------------------------------------------------


def _upload_source(bucket_uri: str, src: str) -> str:
    """Put a local source folder at `<bucket_uri>/results/x/`; returns that URI."""
    store = Store(f"{bucket_uri}/results/x")
    for rel in tree(src):
        store.put_file(os.path.join(src, *rel.split("/")), store.path(rel))
    return store.uri + "/"


def _no_transfer_through_this_machine(monkeypatch):
    """Downloads and uploads through s3fs fail: only a server-side copy can still work."""
    import s3fs

    def refused(*args, **kwargs):
        raise AssertionError("a file passed through this machine")

    monkeypatch.setattr(s3fs.S3FileSystem, "_get_file", refused)
    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", refused)


def test_add_from_s3_into_s3_is_copied_server_side(s3_repo_uri, sources, tmp_path, monkeypatch):
    bucket = s3_repo_uri.rsplit("/", 1)[0]
    src = _upload_source(bucket, sources[0])
    repo = ModelRepository(s3_repo_uri)
    _no_transfer_through_this_machine(monkeypatch)
    entry = repo.add("m", "v1", src, source="uploaded", format="onnx")
    single = repo.add("m", "v2", src + "part-00.bin", source="uploaded", format="onnx")
    monkeypatch.undo()
    assert entry.files == sorted(tree(sources[0])) and single.files == ["part-00.bin"]
    assert _fetched(repo, "m", "v1", tmp_path) == tree(sources[0])
    assert _fetched(repo, "m", "v2", tmp_path)["part-00.bin"] == tree(sources[0])["part-00.bin"]


def test_add_from_s3_into_a_local_repository(s3_repo_uri, sources, tmp_path):
    src = _upload_source(s3_repo_uri.rsplit("/", 1)[0], sources[1])
    repo = ModelRepository(str(tmp_path / "local-repo"))
    entry = repo.add("m", "v1", src, source="uploaded", format="onnx")
    assert tree(repo.local_home("m", "v1")) == tree(sources[1]) and len(entry.files) == FILES_EACH


def test_copy_version_from_s3_server_side(s3_repo_uri, sources, monkeypatch):
    repo = ModelRepository(s3_repo_uri)
    repo.add("m", "v1", sources[2], source="uploaded", format="onnx")
    results = Store(s3_repo_uri.rsplit("/", 1)[0] + "/results")
    _no_transfer_through_this_machine(monkeypatch)
    copied = repo.copy_version("m", "v1", results, results.path("task-1", "model"))
    monkeypatch.undo()
    assert copied == sorted(tree(sources[2]))
    copy = results.read_bytes(results.path("task-1", "model", "weights", "part-07.bin"))
    assert copy == tree(sources[2])["weights/part-07.bin"]


def test_missing_or_credentialed_source_uri_refused(s3_repo_uri):
    repo = ModelRepository(s3_repo_uri)
    bucket = s3_repo_uri.rsplit("/", 1)[0]
    with pytest.raises(RepositoryError, match="no such file or folder"):
        repo.add("m", "v1", f"{bucket}/nothing-here/", source="uploaded", format="onnx")
    with pytest.raises(RepositoryError) as err:
        repo.add("m", "v1", "s3://AKID:topsecret@bucket/x", source="uploaded", format="onnx")
    assert "topsecret" not in str(err.value)
    assert repo.list() == []


# -- a store that stops answering just as the version is claimed ------------------------------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A moto server of this module's own: a test pauses it (SIGSTOP) mid-add."""
    from tests.conftest import running_moto

    with running_moto(tmp_path_factory, "moto-races") as server:
        yield server


def test_store_freezing_at_the_claim_still_ends_in_one_whole_version(own_server, sources, tmp_path, monkeypatch):
    # The conditional PUT of version.json times out while the store is frozen, and may still
    # be carried out when it thaws: the add must not remove the files that PUT would point at.
    import threading
    import uuid

    import boto3
    from accelflow.storage.retry import with_retries

    from tests.conftest import set_s3_env

    set_s3_env(monkeypatch, own_server.endpoint_url)
    monkeypatch.setenv("ACCELFLOW_S3_TIMEOUT", "1")
    monkeypatch.setenv("ACCELFLOW_STORAGE_BACKOFF", "0.5")
    bucket = f"races-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=own_server.endpoint_url).create_bucket(Bucket=bucket)
    repo = ModelRepository(f"s3://{bucket}/repo")
    real_create, frozen = repo.store.create, []

    def create(path, data):
        if path.endswith("version.json") and not frozen:
            frozen.append(threading.Timer(2.5, own_server.resume))
            own_server.pause()
            frozen[0].start()
        return real_create(path, data)

    monkeypatch.setattr(repo.store, "create", create)
    try:
        entry = with_retries(lambda: repo.add("m", "v1", sources[0], source="uploaded", format="onnx",
                                              version_id="0badc0de"), "add m@v1")
    finally:
        if frozen:
            frozen[0].join()
        own_server.resume()
    assert frozen and entry.id == "0badc0de"
    assert _fetched(ModelRepository(f"s3://{bucket}/repo"), "m", "v1", tmp_path) == tree(sources[0])
    assert os.path.basename(entry.home) in _uploads(repo, "m", "v1")


@pytest.mark.parametrize("key", ["model_id", "version_id"])
def test_caller_ids_must_be_safe_names(repo_uri, sources, key):
    repo = ModelRepository(repo_uri)
    with pytest.raises(RepositoryError, match=f"invalid {key} 'a/b'"):
        repo.add("m", "v1", sources[0], source="uploaded", format="onnx", **{key: "a/b"})
    assert repo.list() == []
