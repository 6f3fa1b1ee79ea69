"""The Detectron2 config check (formats/detectron2_model.code_risks): YAML read with the safe
loader along its _BASE_ chain; a python tag, which fvcore would construct with yaml.unsafe_load,
is named with its file and line. Pure Python: Detectron2 need not be installed (the loading
side, merge_from_file with allow_unsafe off, is tested in tests/formats/test_detectron2.py)."""

from __future__ import annotations

import os

import pytest
from accelflow.core.errors import UntrustedModelError
from accelflow.formats import check_model_code, detectron2_model

PLAIN = "_BASE_: bases/Base-RCNN-FPN.yaml\nMODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n  RESNETS:\n    DEPTH: 18\n"


def _write(folder, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_plain_yaml_and_its_base_chain_have_no_risks(tmp_path):
    _write(tmp_path, "bases/Base-RCNN-FPN.yaml", "_BASE_: ../root.yaml\nMODEL:\n  MASK_ON: false\n")
    _write(tmp_path, "root.yaml", "INPUT:\n  FORMAT: BGR\n")
    config = _write(tmp_path, "config.yaml", PLAIN)
    assert detectron2_model.code_risks(config) == []
    assert check_model_code(detectron2_model, config, trusted=False) == []


@pytest.mark.parametrize("value", ["!!python/object/apply:os.system ['touch MARKER']",
                                   "!!python/name:os.system", "!!python/object/new:subprocess.Popen [['true']]"])
def test_a_python_tag_is_named_with_its_file_and_line(tmp_path, value):
    config = _write(tmp_path, "config.yaml", f"MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n  WEIGHTS: {value}\n")
    risks = detectron2_model.code_risks(config)
    assert len(risks) == 1 and risks[0].startswith("config.yaml line 3: a YAML tag that constructs Python objects (")
    assert "python/" in risks[0]
    with pytest.raises(UntrustedModelError, match="--trust-model-code") as refused:
        check_model_code(detectron2_model, config, trusted=False)
    assert "config.yaml line 3" in str(refused.value)
    assert check_model_code(detectron2_model, config, trusted=True) == risks


def test_a_python_tag_in_a_base_is_found(tmp_path):
    _write(tmp_path, "bases/Base.yaml", "MODEL:\n  DEVICE: !!python/object/apply:os.getcwd []\n")
    config = _write(tmp_path, "config.yaml", "_BASE_: bases/Base.yaml\nMODEL:\n  MASK_ON: false\n")
    assert detectron2_model.code_risks(config) == [
        "bases/Base.yaml line 2: a YAML tag that constructs Python objects "
        "(tag:yaml.org,2002:python/object/apply:os.getcwd)"]


@pytest.mark.parametrize("base, risk", [
    ("../outside.yaml", "config.yaml: a _BASE_ '../outside.yaml' outside the model's folder"),
    ("/etc/outside.yaml", "config.yaml: a _BASE_ '/etc/outside.yaml' outside the model's folder"),
    ("https://example.com/Base.yaml", "config.yaml: a _BASE_ fetched from the network (https://example.com/Base.yaml)"),
])
def test_a_base_outside_the_model_folder_is_a_risk(tmp_path, base, risk):
    _write(tmp_path, "outside.yaml", "MODEL:\n  MASK_ON: false\n")
    config = _write(tmp_path / "model", "config.yaml", f"_BASE_: {base}\nMODEL:\n  MASK_ON: false\n")
    assert detectron2_model.code_risks(config) == [risk]


def test_a_base_cycle_and_broken_yaml_are_left_to_detectron2(tmp_path):
    _write(tmp_path, "b.yaml", "_BASE_: config.yaml\n")
    config = _write(tmp_path, "config.yaml", "_BASE_: b.yaml\nMODEL:\n  MASK_ON: false\n")
    assert detectron2_model.code_risks(config) == []
    _write(tmp_path, "config.yaml", "MODEL: [unclosed\n")
    assert detectron2_model.code_risks(config) == []
