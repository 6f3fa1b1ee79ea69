"""Stable Diffusion pipeline folders: detection by content, and a pipeline's tensor information."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from accelflow.core.errors import MissingDependencyError, SpecError, UnsupportedFormatError
from accelflow.formats import diffusers_pipeline as dp

from accelflow import formats
from tests.diffusers_hostile import custom_scheduler, name_module

pytest.importorskip("diffusers", reason="Stable Diffusion pipelines need the diffusers extra: pip install -e .[diffusers]")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from examples.make_sd import make_pipeline

    return make_pipeline(str(tmp_path_factory.mktemp("sd") / "tiny-sd"), "tiny")


def test_a_pipeline_folder_is_detected_as_itself(tiny):
    assert dp.detect(tiny)
    assert formats.find_model_file(tiny) == tiny  # the folder, not one of its component files
    assert formats.detect_format_name(tiny) == "diffusers"
    assert not dp.detect(os.path.join(tiny, "unet"))
    assert not dp.detect(os.path.join(tiny, "model_index.json"))


def test_a_folder_missing_a_component_is_not_a_pipeline(tiny, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(open(os.path.join(tiny, "model_index.json")).read())
    for part in ("unet", "vae", "text_encoder", "tokenizer"):  # no scheduler/
        (broken / part).mkdir()
    assert not dp.detect(str(broken))


def test_detection_imports_neither_diffusers_nor_torch(tiny):
    code = ("import sys; sys.modules['diffusers'] = sys.modules['torch'] = sys.modules['transformers'] = None\n"
            f"from accelflow import formats; print(formats.detect_format_name({tiny!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "diffusers"


def test_without_diffusers_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(MissingDependencyError, match=r"Stable Diffusion \(diffusers\) support is not installed .*bash scripts/install.sh diffusers"):
        dp.import_diffusers()


def test_other_pipeline_classes_are_refused_by_name(tiny, tmp_path):
    index = json.load(open(os.path.join(tiny, "model_index.json")))
    index["_class_name"] = "StableDiffusionXLPipeline"
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedFormatError, match="StableDiffusionXLPipeline.*StableDiffusionPipeline"):
        dp.read_index(str(tmp_path))


def test_networks_take_tensor_information_derived_from_the_image(tiny):
    # tiny: VAE scales by 2, UNet downsamples by 2, 4 latent channels, CLIP 77 tokens of width 32.
    specs = {s.name: s for s in dp.components(tiny, ["image:float(1*3*32*48)"])}
    assert specs["text_encoder"].lines == ["input_ids:int64(1*77)"]
    assert specs["unet"].lines == ["sample:float(2*4*16*24)", "timestep:float(1)",
                                   "encoder_hidden_states:float(2*77*32)"]
    assert specs["vae_decoder"].lines == ["latent:float(1*4*16*24)"]
    assert specs["text_encoder"].int_ranges == {"input_ids": (0, dp.architecture(tiny).vocab_size)}


def test_dynamic_batch_and_sizes_carry_over_to_every_network(tiny):
    ranged = {s.name: s.lines for s in dp.components(tiny, ["input_0:float(1*3*32*32,2*3*64*64)"])}
    assert ranged["unet"][0] == "sample:float(2*4*16*16,4*4*32*32)"
    assert ranged["text_encoder"] == ["input_ids:int64(1*77,2*77)"]  # one row per prompt, up to N
    chosen = {s.name: s.lines for s in dp.components(tiny, ["image:float([1*3*32*32,1*3*64*32])"])}
    assert chosen["vae_decoder"] == ["latent:float([1*4*16*16,1*4*32*16])"]


@pytest.mark.parametrize("lines, message", [
    (["image:float(1*3*32*32)", "input_ids:int64(1*77)"], "one line of tensor information, for the image"),
    (["prompt:float(1*3*32*32)"], "image:float\\(N\\*3\\*H\\*W\\)"),
    (["image:float16(1*3*32*32)"], "chosen by --level"),
    (["image:float(1*3*32)"], "rank 4"),
    (["image:float(1*4*32*32)"], "3 colour channels"),
    (["image:float(1*3*32*30)"], r"multiples of 4 .*; 30 is not\. For example use 28"),
    (["image:float(1*3*32*32,1*3*40*42)"], r"multiples of 4 .*; 42 is not"),
])
def test_what_does_not_fit_a_pipeline_is_refused_clearly(tiny, lines, message):
    with pytest.raises(SpecError, match=message):
        dp.components(tiny, lines)


# -- model code (issue 17) ----------------------------------------------------------------------


def _copy(tiny, tmp_path, name="p") -> str:
    import shutil

    return shutil.copytree(tiny, str(tmp_path / name))


def test_a_pipeline_of_diffusers_and_transformers_classes_runs_no_code_of_its_own(tiny):
    assert dp.code_risks(tiny) == []
    index = json.load(open(os.path.join(tiny, "model_index.json")))
    assert {index[c][0] for c in dp.REQUIRED} == {"diffusers", "transformers"}  # what the check allows


def test_a_diffusers_pipeline_submodule_is_diffusers_own_code(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    name_module(os.path.join(folder, "model_index.json"), "safety_checker", "stable_diffusion",
                "StableDiffusionSafetyChecker")
    assert dp.code_risks(folder) == []


def test_a_custom_component_names_the_component_and_its_module(tiny, tmp_path):
    folder, module = custom_scheduler(tiny, str(tmp_path / "p"), str(tmp_path / "MARKER"))
    assert dp.code_risks(folder) == [
        f"component scheduler: {module}.HostileScheduler is a custom component (its library is not diffusers or "
        f"transformers); loading it would import scheduler/{module}.py"]
    name_module(os.path.join(folder, "model_index.json"), "tokenizer", "some_installed_module", "Tok")
    assert "loading it would import the module 'some_installed_module'" in dp.code_risks(folder)[-1]
    assert not (tmp_path / "MARKER").exists()


def test_a_custom_pipeline_is_named(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    index = json.load(open(os.path.join(folder, "model_index.json")))
    index["_class_name"] = ["my_pipeline", "MyPipeline"]
    json.dump(index, open(os.path.join(folder, "model_index.json"), "w"))
    assert dp.code_risks(folder) == ["model_index.json: _class_name ['my_pipeline', 'MyPipeline'] is a custom "
                                     "pipeline; diffusers would import my_pipeline.py from the pipeline folder"]
    open(os.path.join(folder, "None.py"), "w").write("")  # what diffusers imports when no custom pipeline is named
    assert dp.code_risks(folder)[-1].startswith("None.py beside model_index.json")


def test_remote_code_a_component_config_names_is_a_risk(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    config = os.path.join(folder, "text_encoder", "config.json")
    data = json.load(open(config))
    data["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "someone/repo--configuration_evil.C"}
    json.dump(data, open(config, "w"))
    assert dp.code_risks(folder) == ["component text_encoder: text_encoder/config.json names remote code (auto_map) "
                                     "in configuration_evil.py, modeling_evil.py; loading it would import that"]


def test_a_component_name_cannot_leave_the_folder(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    name_module(os.path.join(folder, "model_index.json"), "../outside", "diffusers", "PNDMScheduler")
    with pytest.raises(UnsupportedFormatError, match="names a component '../outside', which is not a folder name"):
        dp.code_risks(folder)


def test_loading_never_imports_a_custom_component_unless_trusted(tiny, tmp_path):
    from accelflow.core.errors import UntrustedModelError

    marker = tmp_path / "MARKER"
    folder, module = custom_scheduler(tiny, str(tmp_path / "p"), str(marker))
    with pytest.raises(UntrustedModelError, match=f"scheduler/{module}.py.*--trust-model-code"):
        dp.load(folder)
    assert not marker.exists()
    pipe = dp.load(folder, trust_model_code=True)  # diffusers gets trust_remote_code=True for it
    assert marker.exists() and type(pipe.scheduler).__name__ == "HostileScheduler"


def test_a_module_named_after_diffusers_in_a_component_folder_is_a_risk(tiny, tmp_path):
    """diffusers imports <component>/<library>.py when the file is there, even for library "diffusers"."""
    folder = _copy(tiny, tmp_path)
    open(os.path.join(folder, "scheduler", "diffusers.py"), "w").write("raise SystemExit('ran')\n")
    assert dp.code_risks(folder) == ["component scheduler: its folder ships scheduler/diffusers.py, which diffusers "
                                     "would import in place of the diffusers library"]
