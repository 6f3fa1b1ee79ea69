"""The ``accelflow repo`` verbs, on a fresh parser, against a local repository and S3 (moto)."""

from __future__ import annotations

import argparse
import json

import pytest
from accelflow.core.errors import RepositoryError, UnsupportedFormatError
from accelflow.flows.cli.repo import register

from accelflow import formats


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accelflow")
    register(parser.add_subparsers(dest="verb", required=True))
    return parser


def run(*argv: str) -> int:
    args = _parser().parse_args(list(argv))
    return args.func(args)


@pytest.fixture(params=["local", "s3"])
def repo_uri(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "repo")
    return request.getfixturevalue("s3_repo_uri")


@pytest.fixture
def model_file(tmp_path) -> str:
    path = tmp_path / "resnet.onnx"
    path.write_bytes(b"\x08\x07onnx-bytes")
    return str(path)


def test_add_list_show(repo_uri, model_file, capsys):
    assert run("repo", "add", "resnet", "v1", model_file, "--source", "uploaded",
               "--format", "onnx", "--repo", repo_uri) == 0
    out = capsys.readouterr().out
    assert "added resnet@v1 (format onnx, source uploaded)" in out and repo_uri.split("://")[-1] in out

    assert run("repo", "list", "--repo", repo_uri) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SOURCE", "FORMAT", "VERSIONS", "CREATED"]
    assert lines[1].split()[:5:2] == ["resnet", "uploaded", "v1"]

    assert run("repo", "show", "resnet", "--repo", repo_uri) == 0
    out = capsys.readouterr().out
    assert "model:" in out and "resnet" in out and "versions: v1" in out

    assert run("repo", "show", "resnet@v1", "--repo", repo_uri) == 0
    out = capsys.readouterr().out
    assert "version: v1" in out and "  resnet.onnx" in out and "home:" in out


def test_json_output(repo_uri, model_file, capsys):
    run("repo", "add", "m", "1", model_file, "--source", "training", "--format", "onnx",
        "--repo", repo_uri, "--json")
    added = json.loads(capsys.readouterr().out)
    assert (added["model"], added["version"], added["files"]) == ("m", "1", ["resnet.onnx"])

    run("repo", "list", "--repo", repo_uri, "--json")
    models = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["source"], m["format"], m["versions"]) for m in models] == [("m", "training", "onnx", ["1"])]

    run("repo", "show", "m@1", "--repo", repo_uri, "--json")
    assert json.loads(capsys.readouterr().out) == added
    run("repo", "show", "m", "--repo", repo_uri, "--json")
    assert json.loads(capsys.readouterr().out) == models[0]


def test_list_source_filter_and_empty(repo_uri, model_file, capsys):
    run("repo", "list", "--repo", repo_uri)
    assert "no models in" in capsys.readouterr().out
    run("repo", "add", "a", "v1", model_file, "--source", "uploaded", "--format", "onnx", "--repo", repo_uri)
    run("repo", "add", "b", "v1", model_file, "--source", "optimized", "--format", "onnx", "--repo", repo_uri)
    capsys.readouterr()
    run("repo", "list", "--source", "optimized", "--repo", repo_uri, "--json")
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["b"]
    run("repo", "list", "--source", "nothing", "--repo", repo_uri)
    assert "no models with source 'nothing'" in capsys.readouterr().out


def test_errors_are_accelflow_errors(repo_uri, model_file):
    with pytest.raises(RepositoryError, match="is not in repository"):
        run("repo", "show", "ghost", "--repo", repo_uri)
    run("repo", "add", "m", "v1", model_file, "--source", "s", "--format", "onnx", "--repo", repo_uri)
    with pytest.raises(RepositoryError, match="versions: v1"):
        run("repo", "show", "m@v2", "--repo", repo_uri)
    with pytest.raises(RepositoryError, match="already has version"):
        run("repo", "add", "m", "v1", model_file, "--source", "s", "--format", "onnx", "--repo", repo_uri)
    with pytest.raises(RepositoryError, match="letters, digits"):
        run("repo", "add", "../m", "v1", model_file, "--source", "s", "--format", "onnx", "--repo", repo_uri)
    with pytest.raises(RepositoryError, match="invalid version name ''"):
        run("repo", "show", "m@", "--repo", repo_uri)


def test_add_detects_format(tmp_path, model_file, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(formats, "detect_format_name", lambda p: seen.append(p) or "onnx", raising=False)
    run("repo", "add", "m", "v1", model_file, "--source", "s", "--repo", str(tmp_path / "r"), "--json")
    assert seen == [model_file]
    capsys.readouterr()
    run("repo", "show", "m", "--repo", str(tmp_path / "r"), "--json")
    assert json.loads(capsys.readouterr().out)["format"] == "onnx"


def test_add_without_detection_needs_format(tmp_path, model_file, monkeypatch):
    monkeypatch.delattr(formats, "detect_format_name", raising=False)
    with pytest.raises(UnsupportedFormatError, match="--format"):
        run("repo", "add", "m", "v1", model_file, "--source", "s", "--repo", str(tmp_path / "r"))


def test_repo_from_env(tmp_path, model_file, monkeypatch, capsys):
    monkeypatch.setenv("ACCELFLOW_REPO", str(tmp_path / "envrepo"))
    run("repo", "add", "m", "v1", model_file, "--source", "s", "--format", "onnx")
    assert (tmp_path / "envrepo" / "models" / "m" / "model.json").is_file()
    capsys.readouterr()
    run("repo", "list", "--json")
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["m"]


def test_usage_errors(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["repo"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["repo", "add", "m", "v1", "path"])  # --source is required
    assert "--source" in capsys.readouterr().err
