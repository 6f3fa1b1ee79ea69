"""The model repository, the same tests on a local folder and on S3 (a real moto server)."""

from __future__ import annotations

import os
import re

import pytest
from accelflow.core.errors import AccelflowError, RepositoryError
from accelflow.storage.repository import ModelEntry, ModelRepository, VersionEntry, parse_model_ref

from tests.files import tree


@pytest.fixture(params=["local", "s3"])
def repo(request, tmp_path) -> ModelRepository:
    if request.param == "local":
        return ModelRepository(str(tmp_path / "repo"))
    return ModelRepository(request.getfixturevalue("s3_repo_uri"))


@pytest.fixture
def model_file(tmp_path) -> str:
    path = tmp_path / "src" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 40)
    return str(path)


@pytest.fixture
def model_dir(tmp_path) -> str:
    root = tmp_path / "srcdir"
    (root / "weights" / "deep").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "weights" / "w.bin").write_bytes(os.urandom(3000))
    (root / "weights" / "deep" / "empty.txt").write_bytes(b"")
    return str(root)


def test_add_file(repo, model_file):
    entry = repo.add("resnet", "v1", model_file, source="uploaded", format="onnx")
    assert isinstance(entry, VersionEntry)
    assert (entry.model, entry.version, entry.files, entry.extra) == ("resnet", "v1", ["model.onnx"], {})
    assert len(entry.id) == 8 and len(entry.model_id) == 8
    assert re.search(r"models/resnet/versions/v1/files-[0-9a-f]{16}$", entry.home)
    assert repo.version("resnet", "v1") == entry


def test_add_folder_nested_and_fetch(repo, model_dir, tmp_path):
    entry = repo.add("bert", "1", model_dir, source="training", format="torchscript",
                     extra={"original": {"model": "bert", "version": "0"}})
    assert entry.files == ["config.json", "weights/deep/empty.txt", "weights/w.bin"]
    assert repo.version("bert", "1").extra == {"original": {"model": "bert", "version": "0"}}
    dest = tmp_path / "fetched"
    assert repo.fetch("bert", "1", str(dest)) == str(dest)
    assert tree(dest) == tree(model_dir)


def test_list_and_source_filter(repo, model_file, model_dir):
    repo.add("b-model", "v2", model_file, source="uploaded", format="onnx")
    repo.add("b-model", "v10", model_file, source="uploaded", format="onnx")
    repo.add("a-model", "v1", model_dir, source="optimized", format="onnx")
    assert [(m.name, m.versions) for m in repo.list()] == [("a-model", ["v1"]), ("b-model", ["v2", "v10"])]
    assert [m.name for m in repo.list(source="uploaded")] == ["b-model"]
    assert repo.list(source="nothing") == []


def test_list_empty_repository(repo):
    assert repo.list() == []


def test_show_model_and_version(repo, model_file):
    added = repo.add("yolo", "v1", model_file, source="uploaded", format="onnx")
    model = repo.show("yolo")
    assert isinstance(model, ModelEntry)
    assert (model.name, model.source, model.format, model.versions) == ("yolo", "uploaded", "onnx", ["v1"])
    assert model.id == added.model_id and model.created
    assert repo.show("yolo", "v1") == added


def test_duplicate_version_refused(repo, model_file):
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    with pytest.raises(RepositoryError, match="already has version 'v1'"):
        repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    assert repo.show("m").versions == ["v1"]


@pytest.mark.parametrize("key, value", [("source", "training"), ("format", "torchscript")])
def test_version_must_match_model_source_and_format(repo, model_file, key, value):
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    kwargs = {"source": "uploaded", "format": "onnx", key: value}
    with pytest.raises(RepositoryError, match=f"has {key}"):
        repo.add("m", "v2", model_file, **kwargs)


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "..", ".hidden", "a\nb", "a\x00b", "x" * 300, "", "a b"])
def test_bad_names_refused(repo, model_file, bad):
    with pytest.raises(RepositoryError, match="letters, digits"):
        repo.add(bad, "v1", model_file, source="uploaded", format="onnx")
    with pytest.raises(RepositoryError, match="letters, digits"):
        repo.add("good", bad, model_file, source="uploaded", format="onnx")
    assert repo.list() == []


def test_longest_name_accepted(repo, model_file):
    name = "x" * 128
    assert repo.add(name, "v.1_a-b", model_file, source="s", format="onnx").model == name


def test_missing_model_lists_models(repo, model_file):
    with pytest.raises(RepositoryError, match="repository is empty"):
        repo.show("bert")
    repo.add("resnet", "v1", model_file, source="uploaded", format="onnx")
    with pytest.raises(RepositoryError, match=r"'bert' is not in .*models: resnet.*repo add bert"):
        repo.version("bert", "v1")


def test_missing_version_lists_versions(repo, model_file):
    repo.add("bert", "v1", model_file, source="uploaded", format="onnx")
    repo.add("bert", "v2", model_file, source="uploaded", format="onnx")
    with pytest.raises(RepositoryError) as err:
        repo.show("bert", "v3")
    assert str(err.value) == (
        "model 'bert' has no version 'v3'; versions: v1, v2. "
        "Add one with: accelflow repo add bert v3 PATH --source uploaded"
    )
    with pytest.raises(RepositoryError, match="no version"):
        repo.fetch("bert", "v3", "unused")


def test_missing_source_path(repo, tmp_path):
    with pytest.raises(RepositoryError, match="no such file or folder"):
        repo.add("m", "v1", str(tmp_path / "nope"), source="uploaded", format="onnx")


def _fail_on_nth_copy(monkeypatch, repo, n):
    real = repo.store.copy_file
    calls = []

    def copy_file(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(repo.store, "copy_file", copy_file)


def _stored_paths(repo) -> list[str]:
    root = repo.store.path("models")
    return repo.store.fs.find(root) if repo.store.exists(root) else []


def test_failed_add_of_new_model_leaves_nothing(repo, model_dir, monkeypatch):
    _fail_on_nth_copy(monkeypatch, repo, 2)
    with pytest.raises(RepositoryError, match="disk went away"):
        repo.add("m", "v1", model_dir, source="uploaded", format="onnx")
    assert repo.list() == []
    assert _stored_paths(repo) == []


def test_failed_add_keeps_existing_versions(repo, model_dir, model_file, monkeypatch):
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    _fail_on_nth_copy(monkeypatch, repo, 3)
    with pytest.raises(RepositoryError):
        repo.add("m", "v2", model_dir, source="uploaded", format="onnx")
    assert repo.show("m").versions == ["v1"]
    assert not any("/v2/" in p for p in _stored_paths(repo))
    monkeypatch.undo()
    assert repo.add("m", "v2", model_dir, source="uploaded", format="onnx").version == "v2"


def test_failed_version_json_write_leaves_no_version(repo, model_file, monkeypatch):
    real = repo.store.create

    def create(path, data):
        if path.endswith("version.json"):
            raise OSError("write refused")
        return real(path, data)

    monkeypatch.setattr(repo.store, "create", create)
    with pytest.raises(RepositoryError, match="write refused"):
        repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    assert repo.list() == [] and _stored_paths(repo) == []


def test_dangling_symlink_in_source_refused(repo, model_dir):
    # A link is refused before anything is copied, dangling or not.
    os.symlink("/nonexistent/target", os.path.join(model_dir, "zz-gone.bin"))
    with pytest.raises(AccelflowError, match="zz-gone.bin is a symbolic link"):
        repo.add("m", "v1", model_dir, source="uploaded", format="onnx")
    assert repo.list() == [] and _stored_paths(repo) == []


def test_link_out_of_the_source_folder_refused_naming_link_and_target(repo, model_dir, tmp_path):
    secret = tmp_path / "credentials"
    secret.write_bytes(b"aws_secret_access_key = SECRET")
    link = os.path.join(model_dir, "weights", "w2.bin")
    os.symlink(secret, link)
    with pytest.raises(RepositoryError, match=f"{re.escape(link)} is a symbolic link to {re.escape(str(secret))}, "
                                              "outside the model's folder"):
        repo.add("m", "v1", model_dir, source="uploaded", format="onnx")
    assert repo.list() == [] and _stored_paths(repo) == []


def test_link_to_a_file_inside_the_source_folder_is_copied_as_that_file(repo, model_dir, tmp_path):
    os.symlink(os.path.join("weights", "w.bin"), os.path.join(model_dir, "w-latest.bin"))
    entry = repo.add("m", "v1", model_dir, source="uploaded", format="onnx")
    assert "w-latest.bin" in entry.files
    fetched = tree(repo.fetch("m", "v1", str(tmp_path / "fetched")))
    original = open(os.path.join(model_dir, "weights", "w.bin"), "rb").read()
    assert fetched["w-latest.bin"] == fetched["weights/w.bin"] == original
    assert not os.path.islink(tmp_path / "fetched" / "w-latest.bin")


def test_link_planted_in_a_local_version_folder_is_not_followed_out(model_dir, tmp_path):
    repo = ModelRepository(str(tmp_path / "repo"))
    entry = repo.add("m", "v1", model_dir, source="uploaded", format="onnx")
    secret = tmp_path / "credentials"
    secret.write_bytes(b"SECRET")
    planted = os.path.join(entry.home, "config.json")
    os.unlink(planted)
    os.symlink(secret, planted)  # someone with write access to the repository's folder
    with pytest.raises(RepositoryError, match=f"{re.escape(planted)} is a symbolic link to {re.escape(str(secret))}"):
        repo.fetch("m", "v1", str(tmp_path / "fetched"))
    assert not os.path.lexists(tmp_path / "fetched" / "config.json")


def test_leftover_of_crashed_add_is_never_read_nor_removed(repo, model_file):
    # A crashed add leaves its own upload folder and no version.json: not a version. It may
    # as well be another writer's add in progress, so a later add leaves it alone.
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    leftover = repo.store.path("models", "m", "versions", "v2", "files-0123456789abcdef", "junk")
    repo.store.write(leftover, b"x")
    assert repo.show("m").versions == ["v1"]
    entry = repo.add("m", "v2", model_file, source="uploaded", format="onnx")
    assert entry.files == ["model.onnx"] and "files-0123456789abcdef" not in entry.home
    assert repo.store.exists(leftover)


def test_version_json_layout(repo, model_file):
    entry = repo.add("m", "v1", model_file, source="uploaded", format="onnx", extra={"task": "t1"})
    record = repo.store.read_json(repo.store.path("models", "m", "versions", "v1", "version.json"))
    assert set(record) == {"version", "id", "upload", "created", "files", "sizes", "extra"}
    assert record["sizes"] == {"model.onnx": os.path.getsize(model_file)}
    assert entry.home.endswith(f"/files-{record['upload']}")
    model = repo.store.read_json(repo.store.path("models", "m", "model.json"))
    assert set(model) == {"name", "id", "source", "format", "created"}


def test_version_written_by_older_releases_has_its_files_in_files(repo, model_file, tmp_path):
    # No "upload" in version.json: the home directory is files/, as the old layout had it.
    store = repo.store
    store.write_json(store.path("models", "old", "model.json"), {
        "name": "old", "id": "0a1b2c3d", "source": "uploaded", "format": "onnx", "created": "2024-01-01"})
    store.write(store.path("models", "old", "versions", "v1", "files", "sub", "m.onnx"), b"old bytes")
    store.write_json(store.path("models", "old", "versions", "v1", "version.json"), {
        "version": "v1", "id": "deadbeef", "created": "2024-01-01", "files": ["sub/m.onnx"],
        "sizes": {"sub/m.onnx": 9}, "extra": {}})
    entry = repo.version("old", "v1")
    assert entry.home == store.uri_of(store.path("models", "old", "versions", "v1", "files"))
    repo.fetch("old", "v1", str(tmp_path / "got"))
    assert (tmp_path / "got" / "sub" / "m.onnx").read_bytes() == b"old bytes"
    assert repo.add("old", "v2", model_file, source="uploaded", format="onnx").model_id == "0a1b2c3d"
    assert repo.show("old").versions == ["v1", "v2"]


def test_copy_version_into_another_store(repo, model_dir, tmp_path):
    from accelflow.storage.store import Store

    repo.add("m", "v1", model_dir, source="uploaded", format="onnx")
    dest = Store(str(tmp_path / "results"))
    copied = repo.copy_version("m", "v1", dest, dest.path("x", "model"))
    assert copied == ["config.json", "weights/deep/empty.txt", "weights/w.bin"]
    assert tree(tmp_path / "results" / "x" / "model") == tree(model_dir)
    inside = repo.copy_version("m", "v1", repo.store, repo.store.path("elsewhere"))  # same store
    assert inside == copied
    assert repo.store.read_bytes(repo.store.path("elsewhere", "weights", "w.bin")) == tree(model_dir)["weights/w.bin"]


def test_extra_must_be_json(repo, model_file):
    with pytest.raises(RepositoryError, match="JSON"):
        repo.add("m", "v1", model_file, source="uploaded", format="onnx", extra={"x": object()})


def test_local_home(repo, model_file):
    entry = repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    home = repo.local_home("m", "v1")
    if repo.uri.startswith("s3://"):
        assert home is None and entry.home.startswith(repo.uri + "/models/m/")
    else:
        assert home == entry.home and os.path.isfile(os.path.join(home, "model.onnx"))


def test_secret_never_shown(repo, model_file):
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "unset-secret")
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    texts = [repr(repo), repo.uri]
    for call in (lambda: repo.show("nope"), lambda: repo.show("m", "v9"),
                 lambda: repo.add("m", "v1", model_file, source="uploaded", format="onnx")):
        with pytest.raises(RepositoryError) as err:
            call()
        texts.append(str(err.value))
    assert not any(secret in text for text in texts)
    stored = b"".join(repo.store.fs.cat_file(p) for p in _stored_paths(repo))
    assert secret.encode() not in stored


# -- local-only and S3-only behaviour --------------------------------------------------------


def test_default_uri_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELFLOW_REPO", str(tmp_path / "r"))
    assert ModelRepository().uri == str(tmp_path / "r")
    monkeypatch.delenv("ACCELFLOW_REPO")
    monkeypatch.chdir(tmp_path)
    assert ModelRepository().uri == str(tmp_path / "model-repo")


def test_file_uri_is_local(tmp_path, model_file):
    repo = ModelRepository(f"file://{tmp_path}/r")
    assert repo.uri == f"{tmp_path}/r"
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    assert os.path.isfile(tmp_path / "r/models/m/versions/v1/version.json")


def test_explicit_storage_options_secret_hidden(s3_server, s3_repo_uri, monkeypatch, model_file):
    # Wrong credentials in the environment; the right ones arrive as storage_options.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    options = {"key": "testing", "secret": "explicit-secret-5b1d", "endpoint_url": s3_server.endpoint_url}
    repo = ModelRepository(s3_repo_uri, storage_options=options)
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    assert [m.name for m in repo.list()] == ["m"]
    assert "explicit-secret-5b1d" not in repr(repo) + repo.uri


def test_credentials_in_uri_refused():
    with pytest.raises(RepositoryError) as err:
        ModelRepository("s3://AKID:topsecret@bucket/prefix")
    assert "topsecret" not in str(err.value)


def test_endpoint_url_env_also_honoured(s3_server, s3_repo_uri, monkeypatch, model_file):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    repo = ModelRepository(s3_repo_uri)
    repo.add("m", "v1", model_file, source="uploaded", format="onnx")
    assert repo.show("m").versions == ["v1"]


def test_unreachable_storage_is_a_repository_error(s3_server, s3_repo_uri):
    # One attempt only, so the test does not wait through botocore's retries.
    repo = ModelRepository(s3_repo_uri, storage_options={"config_kwargs": {"retries": {"max_attempts": 1}}})
    s3_server.stop()
    try:
        with pytest.raises(RepositoryError, match="could not list models") as err:
            repo.list()
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(err.value)
    finally:
        s3_server.start()


def test_missing_bucket_is_a_repository_error(s3_repo_uri, model_file):
    repo = ModelRepository("s3://no-such-bucket-here/repo")
    assert repo.list() == []
    with pytest.raises(RepositoryError, match="could not add m@v1"):
        repo.add("m", "v1", model_file, source="uploaded", format="onnx")


@pytest.mark.parametrize("ref, expected", [
    ("bert@v1", ("bert", "v1")),
    ("my.model@1.0", ("my.model", "1.0")),
    ("models/bert.onnx", None),
    ("C:\\m\\bert.onnx", None),
    ("bert.onnx", None),
    ("dir/bert@v1", None),
])
def test_parse_model_ref(ref, expected):
    assert parse_model_ref(ref) == expected


def test_parse_model_ref_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd@name").write_text("x")
    assert parse_model_ref("odd@name") is None


def test_parse_model_ref_bad_names():
    with pytest.raises(RepositoryError, match="letters, digits"):
        parse_model_ref("bert@")
    with pytest.raises(RepositoryError, match="letters, digits"):
        parse_model_ref("a@b@c")


def test_unknown_protocol_refused():
    with pytest.raises(RepositoryError, match="cannot open nope:// storage.*use a local folder or s3://"):
        ModelRepository("nope://bucket/x")
