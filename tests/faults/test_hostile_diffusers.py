"""A Stable Diffusion pipeline folder whose scheduler is a custom module that runs code when
imported: refused by `accelflow optimize`, `repo add` and `accelflow.load_pipeline` unless the
model's code is trusted, and the module is never imported (its marker file never appears)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from accelflow.core.errors import UntrustedModelError
from accelflow.flows.cli.main import EXIT_USER_ERROR, main

import accelflow
from tests.diffusers_hostile import SCHEDULER_MODULE, custom_scheduler, name_module

pytest.importorskip("diffusers", reason="Stable Diffusion pipelines need the diffusers extra")

FAST = ["--draws", "1", "--bench-seconds", "0.2", "--engine", "onnxruntime"]
INFO = ["-t", "image:float(1*3*32*32)"]


def _fails(args, capsys, *needles) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from examples.make_sd import make_pipeline

    return make_pipeline(str(tmp_path_factory.mktemp("sd") / "tiny-sd"), "tiny")


@pytest.fixture
def hostile(tiny, tmp_path) -> tuple[str, str, str]:
    """(folder, module, marker): the tiny pipeline with scheduler/<module>.py writing marker on import."""
    marker = str(tmp_path / "MARKER")
    folder, module = custom_scheduler(tiny, str(tmp_path / "models" / "sd"), marker)
    return folder, module, marker


def test_optimize_refuses_a_custom_scheduler_and_imports_nothing(prefect_server, hostile, tmp_path, capsys):
    folder, module, marker = hostile
    out = tmp_path / "out"
    _fails(["optimize", folder, *INFO, *FAST, "--output", str(out)], capsys,
           "component scheduler", f"scheduler/{module}.py", "--trust-model-code")
    assert not os.path.exists(marker) and not out.exists()


def test_repo_add_refuses_a_custom_scheduler_and_imports_nothing(hostile, tmp_path, capsys):
    folder, module, marker = hostile
    repo = tmp_path / "repo"
    _fails(["repo", "add", "sd", "v1", folder, "--source", "uploaded", "--repo", str(repo)], capsys,
           "component scheduler", f"scheduler/{module}.py", "--trust-model-code")
    assert not os.path.exists(marker) and not (repo / "models" / "sd").exists()


@pytest.fixture(scope="module")
def result(prefect_server, tiny, tmp_path_factory) -> str:
    """A real optimized pipeline: the result folder of the tiny pipeline's task."""
    out = tmp_path_factory.mktemp("out")
    code = main(["optimize", tiny, *INFO, *FAST, "--output", str(out), "--name", "sd-result"])
    assert code == 0
    return str(out / "sd-result")


def _edited(result: str, tmp_path, marker: str) -> tuple[str, str]:
    """A copy of the result whose model_index.json now names a hostile scheduler module, shipped
    in its scheduler folder (what an edit of a stored result could do)."""
    copy = shutil.copytree(result, str(tmp_path / "edited"))
    model = os.path.join(copy, "model")
    module = "sched_edited_" + os.path.basename(str(tmp_path))[-8:].replace("-", "_")
    with open(os.path.join(model, "scheduler", f"{module}.py"), "w", encoding="utf-8") as f:
        f.write(SCHEDULER_MODULE.format(marker=marker))
    name_module(os.path.join(model, "model_index.json"), "scheduler", module, "HostileScheduler")
    return copy, module


def test_load_pipeline_refuses_a_result_edited_to_name_a_hostile_module(result, tmp_path):
    assert type(accelflow.load_pipeline(result)).__name__ == "StableDiffusionPipeline"  # the unedited one loads
    marker = str(tmp_path / "MARKER")
    edited, module = _edited(result, tmp_path, marker)
    for load in (accelflow.load_pipeline, accelflow.load):
        with pytest.raises(UntrustedModelError, match=f"scheduler/{module}.py.*trust_model_code=True"):
            load(edited)
    assert not os.path.exists(marker)


def test_load_pipeline_never_imports_an_installed_module_the_index_names(result, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "hostile_site_module.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))  # importable, as any installed module is
    edited = shutil.copytree(result, str(tmp_path / "edited"))
    name_module(os.path.join(edited, "model", "model_index.json"), "tokenizer", "hostile_site_module", "Tok")
    with pytest.raises(UntrustedModelError, match="component tokenizer: .*the module 'hostile_site_module'"):
        accelflow.load_pipeline(edited)
    assert not marker.exists()
    assert json.load(open(os.path.join(edited, "model", "model_index.json")))["tokenizer"][0] == "hostile_site_module"
