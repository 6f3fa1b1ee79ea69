"""storage/store.py: a local folder or an S3 URI (a real moto server) with the same guarantees:
whole writes, create-once, listings, copies, removal, and storage failures in the caller's words."""

from __future__ import annotations

import os
import threading

import pytest
from accelflow.core.errors import AccelflowError, RepositoryError
from accelflow.storage.store import StorageError, Store, check_fetch_size, is_remote, repository_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    return Store(request.getfixturevalue("s3_repo_uri").replace("/repo", "/store"))


def test_write_and_read_back(store):
    store.write(store.path("a/b.bin"), b"\x00\x01")
    assert store.read_bytes(store.path("a", "b.bin")) == b"\x00\x01"
    store.write(store.path("a/b.bin"), b"new")  # replaced whole
    assert store.read_bytes(store.path("a/b.bin")) == b"new"
    store.write_json(store.path("c.json"), {"k": [1, 2]})
    assert store.read_json(store.path("c.json")) == {"k": [1, 2]}
    assert store.read_bytes(store.path("missing")) is None and store.read_json(store.path("missing.json")) is None
    assert store.exists(store.path("c.json")) and not store.exists(store.path("missing"))


@pytest.mark.parametrize("data, complaint", [(b"{not json", "malformed"), (b"[1, 2]", "not a JSON object")])
def test_malformed_json_is_the_stores_error(tmp_path, data, complaint):
    store = Store(str(tmp_path), error=RepositoryError)
    store.write(store.path("x.json"), data)
    with pytest.raises(RepositoryError, match=complaint):
        store.read_json(store.path("x.json"))


def test_create_writes_only_where_nothing_is(store):
    assert store.create_json(store.path("claim.json"), {"by": 1})
    assert not store.create_json(store.path("claim.json"), {"by": 2})
    assert store.read_json(store.path("claim.json")) == {"by": 1}


def test_of_concurrent_creates_exactly_one_wins(store):
    results, start = [], threading.Barrier(6)

    def claim(n: int) -> None:
        start.wait()
        results.append((store.create(store.path("lock"), str(n).encode()), n))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for won, n in results if won]
    assert len(results) == 6 and len(winners) == 1
    assert store.read_bytes(store.path("lock")) == str(winners[0]).encode()


def test_a_local_write_leaves_no_temporary_file(tmp_path):
    store = Store(str(tmp_path))
    store.write(store.path("f"), b"1")
    store.create(store.path("f"), b"2")
    store.create(store.path("g"), b"3")
    assert sorted(os.listdir(tmp_path)) == ["f", "g"]


def test_files_and_children(store):
    for rel, data in {"m/a.txt": b"12", "m/deep/b.bin": b"12345", "n/c": b""}.items():
        store.write(store.path(rel), data)
    assert store.files(store.root) == {"m/a.txt": 2, "m/deep/b.bin": 5, "n/c": 0}
    assert store.files(store.path("m")) == {"a.txt": 2, "deep/b.bin": 5}
    assert store.files(store.path("nothing")) == {}
    assert store.children(store.root) == ["m", "n"] and store.children(store.path("nothing")) == []


def test_remove_a_folder_with_everything_in_it(store):
    store.write(store.path("gone/x/y"), b"1")
    store.write(store.path("kept"), b"2")
    store.remove(store.path("gone"))
    store.remove(store.path("gone"))  # nothing there: not an error
    assert store.files(store.root) == {"kept": 1}
    store.remove_files_quietly([store.path("kept"), store.path("never-was")])
    assert store.files(store.root) == {}


def test_copies_between_and_inside_stores(s3_repo_uri, tmp_path):
    local, s3 = Store(str(tmp_path / "local")), Store(s3_repo_uri.replace("/repo", "/copies"))
    local.write(local.path("src.bin"), b"payload")
    s3.copy_file(local, local.path("src.bin"), s3.path("up/src.bin"))  # upload
    s3.copy_file(s3, s3.path("up/src.bin"), s3.path("inside/src.bin"))  # server side
    local.copy_file(s3, s3.path("inside/src.bin"), local.path("down/src.bin"))  # download
    local.copy_file(local, local.path("down/src.bin"), local.path("again/src.bin"))
    assert s3.files(s3.root) == {"inside/src.bin": 7, "up/src.bin": 7}
    assert local.read_bytes(local.path("again/src.bin")) == b"payload"
    assert s3.same_backend(Store(s3_repo_uri)) and not s3.same_backend(local)


def test_paths_and_uris(tmp_path, s3_repo_uri):
    local = Store(str(tmp_path / "root"))
    assert local.uri == str(tmp_path / "root") and local.path("a/b", "c") == str(tmp_path / "root" / "a" / "b" / "c")
    assert local.join(local.path("x"), "y/z") == str(tmp_path / "root" / "x" / "y" / "z")
    assert Store("file://" + str(tmp_path)).local and Store("file://" + str(tmp_path)).uri == str(tmp_path)
    s3 = Store(s3_repo_uri + "/")
    bucket = s3_repo_uri.split("/")[2]
    assert s3.uri == s3_repo_uri and s3.path("a", "b/c") == f"{bucket}/repo/a/b/c"
    assert s3.uri_of(s3.path("a")) == f"{s3_repo_uri}/a" and s3.join(s3.path("a"), "b") == f"{bucket}/repo/a/b"
    assert is_remote(s3_repo_uri) and not is_remote(str(tmp_path)) and not is_remote("file:///x")


def test_contains_stays_inside_the_root(tmp_path, s3_repo_uri):
    local = Store(str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    (tmp_path / "rootsibling").mkdir()
    os.symlink(tmp_path / "rootsibling", tmp_path / "root" / "link")
    assert local.contains(str(tmp_path / "root")) and local.contains(str(tmp_path / "root" / "a" / "b"))
    assert not local.contains(str(tmp_path / "root" / ".." / "other"))
    assert not local.contains(str(tmp_path / "rootsibling"))  # a shared prefix is not inside
    assert not local.contains(str(tmp_path / "root" / "link" / "f"))  # a link out of the root
    assert not local.contains(s3_repo_uri)
    s3 = Store(s3_repo_uri)
    assert s3.contains(s3_repo_uri + "/a/b") and not s3.contains(s3_repo_uri + "2/a")
    assert not s3.contains(s3_repo_uri + "/../elsewhere") and not s3.contains(str(tmp_path))


def test_credentials_in_a_uri_are_refused():
    with pytest.raises(StorageError, match="credentials in a storage URI are not supported"):
        Store("s3://key:secret@bucket/x")
    with pytest.raises(RepositoryError, match="credentials"):
        repository_store("s3://key:secret@bucket/x")


def test_an_unknown_protocol_is_the_stores_error():
    with pytest.raises(RepositoryError, match=r"cannot open nosuchfs:// storage"):
        Store("nosuchfs://bucket/x", error=RepositoryError)


def test_storage_failures_become_the_stores_error_naming_the_action(tmp_path):
    store = Store(str(tmp_path), error=RepositoryError)
    with pytest.raises(RepositoryError, match=rf"could not read the index in {tmp_path}: FileNotFoundError"):
        with store.errors("read the index"):
            open(tmp_path / "missing")
    with pytest.raises(StorageError):  # an accelflow error passes as it is
        with store.errors("read"):
            raise StorageError("already explained")
    with pytest.raises(ZeroDivisionError):  # a bug is not a storage failure
        with store.errors("read"):
            1 / 0
    assert issubclass(StorageError, AccelflowError)


def test_a_download_that_grows_past_its_listed_size_is_stopped(store, tmp_path):
    store.write(store.path("model.bin"), bytes(2 * 2**20))
    listed = store.files(store.root)["model.bin"]
    store.get_file(store.path("model.bin"), str(tmp_path / "got" / "ok.bin"), size=listed)
    assert os.path.getsize(tmp_path / "got" / "ok.bin") == 2 * 2**20
    # Listed at 1000 bytes, 2 MiB when fetched: replaced or growing since it was listed.
    with pytest.raises(StorageError, match=r"model.bin grew past its listed size while it was fetched \(2097152 bytes, "
                                           r"listed 1000\); the download was stopped"):
        store.get_file(store.path("model.bin"), str(tmp_path / "got" / "big.bin"), size=1000)
    assert os.listdir(tmp_path / "got") == ["ok.bin"]  # nothing of it kept


def test_fetches_over_the_operators_cap_are_refused(monkeypatch):
    check_fetch_size(64 * 2**30, "the model m", RepositoryError)  # the default cap: 64 GiB
    with pytest.raises(RepositoryError) as caught:
        check_fetch_size(64 * 2**30 + 1, "the model m", RepositoryError)
    assert "the model m is 64.0 GiB (68719476737 bytes), more than this worker's limit of 64.0 GiB" in str(caught.value)
    monkeypatch.setenv("ACCELFLOW_MAX_FETCH_GB", str(1 / 1024))
    with pytest.raises(RepositoryError, match=r"\(1048577 bytes\).*limit of 1.0 MiB.*\(ACCELFLOW_MAX_FETCH_GB\); "
                                              "nothing was downloaded"):
        check_fetch_size(2**20 + 1, "the model m", RepositoryError)
