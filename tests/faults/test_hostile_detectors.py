"""Hostile detector configs (issue 17): an MMDetection config is Python that MMEngine executes,
a Detectron2 YAML may hold python tags. Refused by default before anything reads them: exit 2,
no traceback, the file and line named with --trust-model-code, and nothing ran (a marker file is
never created). The Detectron2 cases that need Detectron2 itself run in its venv, in
tests/formats/test_detectron2.py (scripts/test.sh); its refusals need only PyYAML and run here.

With --trust-model-code the config's code runs, but inside the task's isolated child: no
credentials in its environment, its working directory the task's scratch folder."""

from __future__ import annotations

import os

import pytest
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

FAST = ["--draws", "1", "--bench-seconds", "0.2"]
MMDET_SPEC = "inputs[0]:float(3*256*256)"
D2_SPEC = "input_0[0][image]:float(3*256*256)"
MODEL = "model = dict(type='RetinaNet', backbone=dict(type='ResNet', depth=18))\n"


def _mmdet_missing() -> str:
    try:
        import mmdet  # noqa: F401  (imports mmcv.ops)
    except Exception as exc:
        return f"MMDetection is not installed with mmcv's compiled ops ({type(exc).__name__}); see docs/detectors.md"
    return ""


MMDET_MISSING = _mmdet_missing()
needs_mmdet = pytest.mark.skipif(bool(MMDET_MISSING), reason=MMDET_MISSING or "installed")


def _fails(args, capsys, *needles) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


def _detector_folder(folder, config_name: str, text: str) -> str:
    """A detector folder: the config and a checkpoint beside it (plain weights)."""
    import torch

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, config_name), "w") as f:
        f.write(text)
    torch.save({"state_dict": {"w": torch.zeros(1)}}, os.path.join(folder, "model.pth"))
    return str(folder)


def _refused_everywhere(folder: str, spec: str, tmp_path, capsys, *needles) -> None:
    """Refused by optimize and by repo add, naming what would run and how to allow it."""
    out, repo = tmp_path / "out", tmp_path / "repo"
    _fails(["optimize", folder, "-t", spec, *FAST, "--output", str(out)], capsys, "--trust-model-code", *needles)
    assert not out.exists()
    _fails(["repo", "add", "detector", "v1", folder, "--source", "uploaded", "--repo", str(repo)], capsys,
           "--trust-model-code", *needles)
    assert not os.path.exists(repo / "detector")


@pytest.mark.parametrize("first_line, named", [
    ("__import__('os').system('touch {marker}')", "faster_rcnn.py line 1: a call to __import__"),
    ("import os; os.system('touch {marker}')", "faster_rcnn.py line 1: an import (import os)"),
    ("model = dict(type='os.system', command='touch {marker}')", "a type 'os.system', which MMEngine would import"),
    ("data_root = '{{{{ fileDirname }}}}'", "faster_rcnn.py line 1: a '{{ ... }}' substitution"),
])
def test_an_mmdet_config_that_runs_code_is_refused(prefect_server, tmp_path, capsys, first_line, named):
    marker = tmp_path / "MARKER"
    folder = _detector_folder(tmp_path / "model", "faster_rcnn.py", first_line.format(marker=marker) + "\n" + MODEL)
    _refused_everywhere(folder, MMDET_SPEC, tmp_path, capsys, named)
    assert not marker.exists()


def test_an_mmdet_base_outside_the_model_folder_is_refused(prefect_server, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    (tmp_path / "shared.py").write_text(f"__import__('os').system('touch {marker}')\n")
    folder = _detector_folder(tmp_path / "model", "faster_rcnn.py", "_base_ = ['../shared.py']\n" + MODEL)
    _refused_everywhere(folder, MMDET_SPEC, tmp_path, capsys,
                        "faster_rcnn.py line 1: a _base_ '../shared.py' outside the model's folder")
    assert not marker.exists()


def test_code_in_an_inherited_mmdet_base_is_refused(prefect_server, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    folder = _detector_folder(tmp_path / "model", "faster_rcnn.py", "_base_ = ['bases/runtime.py']\n" + MODEL)
    os.makedirs(os.path.join(folder, "bases"))
    with open(os.path.join(folder, "bases", "runtime.py"), "w") as f:
        f.write(f"x = 1\ny = exec(\"__import__('os').system('touch {marker}')\")\n")
    _refused_everywhere(folder, MMDET_SPEC, tmp_path, capsys, "bases/runtime.py line 2: a call to exec")
    assert not marker.exists()


def test_a_detectron2_python_tag_is_refused(prefect_server, tmp_path, capsys):
    """Refused before Detectron2 is imported: this runs without it (its loading with
    allow_unsafe off is tested in tests/formats/test_detectron2.py)."""
    marker = tmp_path / "MARKER"
    text = (f"MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n"
            f"  WEIGHTS: !!python/object/apply:os.system ['touch {marker}']\n")
    folder = _detector_folder(tmp_path / "model", "config.yaml", text)
    _refused_everywhere(folder, D2_SPEC, tmp_path, capsys, "config.yaml line 3: a YAML tag that constructs Python objects")
    assert not marker.exists()


@pytest.fixture(scope="module")
def small_mmdet(tmp_path_factory):
    """The stock RetinaNet R18 config (merged) with random weights (examples/make_detectors.py)."""
    if MMDET_MISSING:
        pytest.skip(MMDET_MISSING)
    from examples.make_detectors import make_mmdet

    return make_mmdet("retinanet-r18", str(tmp_path_factory.mktemp("mmdet")))


@needs_mmdet
def test_a_type_mmdet_has_not_registered_is_never_imported(prefect_server, small_mmdet, tmp_path, capsys, monkeypatch):
    """A plain-data config passes the AST check, but MMEngine's registry imports a type name it
    does not hold (`type='os.system'` would call os.system): refused before the build."""
    marker = tmp_path / "MARKER"
    modules = tmp_path / "site"
    modules.mkdir()
    (modules / "sideeffect_on_import.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(modules))  # stands for any module installed on the worker,
    monkeypatch.setenv("PYTHONPATH", str(modules))  # in this process and in the task's model process
    text = open(small_mmdet).read().replace("type='RetinaNet'", "type='sideeffect_on_import'", 1)
    assert "sideeffect_on_import" in text
    folder = _detector_folder(tmp_path / "model", "config.py", text)
    _fails(["optimize", folder, "-t", MMDET_SPEC, *FAST, "--output", str(tmp_path / "out")], capsys,
           "'sideeffect_on_import' that MMDetection has not registered", "--trust-model-code")
    assert not marker.exists()


@needs_mmdet
def test_trusted_mmdet_code_runs_without_credentials_in_the_scratch_folder(prefect_server, small_mmdet, tmp_path,
                                                                           monkeypatch, capsys):
    """Depends on the isolated child (issue 17 item 2): fails until the steps that load a model
    run in a child process without AWS_*/PREFECT_API_KEY, in the task's scratch folder."""
    import shutil

    env_marker, pwd_marker = tmp_path / "MARKER_ENV", tmp_path / "MARKER_PWD"
    folder = tmp_path / "model"
    os.makedirs(folder)
    shutil.copy(os.path.join(os.path.dirname(small_mmdet), "config.pth"), folder / "config.pth")
    text = open(small_mmdet).read()
    (folder / "config.py").write_text(f"__import__('os').system('env > {env_marker}; pwd > {pwd_marker}')\n" + text)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_KEY"):
        monkeypatch.setenv(name, "secret-" + name.lower())
    code = main(["optimize", str(folder), "-t", MMDET_SPEC, "--trust-model-code", "--level", "lossless",
                 "--engine", "onnxruntime", *FAST, "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert env_marker.exists() and pwd_marker.exists()  # the config's code ran: trusted
    leaked = [line.split("=", 1)[0] for line in env_marker.read_text().splitlines()
              if line.startswith(("AWS_", "PREFECT_API_KEY"))]
    assert leaked == [], f"the model's code saw {leaked}"
    assert pwd_marker.read_text().strip() != os.getcwd()
