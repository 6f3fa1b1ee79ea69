"""The MMDetection config check (formats/mmdet_model.code_risks): plain data passes, anything
MMEngine would run or import is named with its file and line. Pure Python: nothing is executed,
and MMDetection need not be installed."""

from __future__ import annotations

import os

import pytest
from accelflow.core.errors import UntrustedModelError
from accelflow.formats import check_model_code, mmdet_model

PLAIN = '''"""A config of plain data."""
_base_ = ['bases/model.py', 'mmdet::_base_/default_runtime.py']
depth = 18
channels = [64, 128, 256, 512]
model = dict(
    type='FasterRCNN',
    backbone=dict(type='ResNet', depth=depth, frozen_stages=-1 + 2, norm_eval=depth > 10 and True),
    neck={'type': 'mmdet.FPN', 'in_channels': channels, 'out_channels': 256},
    test_cfg=dict(rcnn=dict(score_thr=0.05 if depth < 50 else 0.1, nms=dict(type='nms', iou_threshold=0.5))),
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], pad_size_divisor=32),
)
extra = dict({'a': 1}, **dict(b=2)) if False else dict(**dict(a=1), b=(1, 2), c={1, 2}, d=list((1,)))
model['test_cfg']['rcnn']['max_per_img'] = 100
depth += 1
pipeline = _base_.train_pipeline + [dict(type='PackDetInputs')]
_base_.model.neck.num_outs = depth - 14
neck = dict(type=_base_.model.neck.type, norm={{_base_.env_cfg}})
name: 'a string' = f'r{depth}'
dataset_type = 'CocoDataset'
data = dict(type=dataset_type, scales=[(1333, 800)], first=channels[0], neg=-channels[-1], s=set())
'''


def _write(folder, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_a_config_of_plain_data_and_its_bases_has_no_risks(tmp_path):
    config = _plain_config(tmp_path, PLAIN)
    assert mmdet_model.code_risks(config) == []
    assert check_model_code(mmdet_model, config, trusted=False) == []


def _plain_config(folder, text: str) -> str:
    _write(folder, "bases/model.py", "_base_ = './more.py'\nmodel = dict(type='RetinaNet', neck=dict(type='FPN'))\n")
    _write(folder, "bases/more.py", "env_cfg = dict(cudnn_benchmark=False)\ntrain_pipeline = [dict(type='LoadImageFromFile')]\n")
    return _write(folder, "faster_rcnn.py", text)


def test_what_the_check_allows_is_a_config_mmengine_reads(tmp_path):
    """The allowed subset is real MMEngine config syntax, inheritance included (a check that
    refused ordinary configs would make every model need --trust-model-code)."""
    config = pytest.importorskip("mmengine.config")
    path = _plain_config(tmp_path, PLAIN.replace(", 'mmdet::_base_/default_runtime.py'", ""))  # (mmdet not needed)
    cfg = config.Config.fromfile(path)
    assert cfg.model.backbone == {"type": "ResNet", "depth": 18, "frozen_stages": 1, "norm_eval": True}
    assert cfg.model.neck.type == "mmdet.FPN" and cfg.env_cfg.cudnn_benchmark is False
    assert (cfg.name, cfg.depth, cfg.data.neg, cfg.extra.c) == ("r19", 19, -512, {1, 2})
    assert cfg.neck == {"type": "FPN", "norm": {"cudnn_benchmark": False}}  # values of the bases, by reference
    assert [p["type"] for p in cfg.pipeline] == ["LoadImageFromFile", "PackDetInputs"]


def test_plain_data_names_code_through_mmengines_registry(tmp_path):
    """Why `type` strings are checked: for a name it does not hold, MMEngine's registry imports
    it by name, so `dict(type='os.system', command=...)` runs a command with no code in sight."""
    registry = pytest.importorskip("mmengine.registry")
    marker = tmp_path / "MARKER"
    registry.MODELS.build(dict(type="os.system", command=f"touch {marker}"))
    assert marker.exists()
    config = _write(tmp_path, "c.py", f"model = dict(type='os.system', command='touch {marker}')\n")
    assert mmdet_model.code_risks(config) == ["c.py line 1: a type 'os.system', which MMEngine would import by name"]


@pytest.mark.parametrize("line, risk", [
    ("__import__('os').system('touch MARKER')", "faster_rcnn.py line 1: a call to __import__"),
    ("import os", "faster_rcnn.py line 1: an import (import os)"),
    ("from os import system", "faster_rcnn.py line 1: an import (from os import system)"),
    ("with read_base():\n    from .base import *", "line 1: a with block"),
    ("x = open('/etc/passwd').read()", "line 1: a call to open('/etc/passwd').read"),
    ("x = print", "line 1: the name print, not assigned in this config"),
    ("x = dict.fromkeys(['a'])", "line 1: a call to dict.fromkeys"),
    ("a = [1]\nx = a.count", "line 2: attribute access (a.count)"),
    ("x = (lambda: 1)", "line 1: a lambda"),
    ("x = [c for c in 'ab']", "line 1: a comprehension"),
    ("def f():\n    pass", "line 1: a function definition"),
    ("class C:\n    pass", "line 1: a class definition"),
    ("__builtins__ = {}", "line 1: the name __builtins__"),
    ("x = __builtins__", "line 1: the name __builtins__"),
    ("custom_imports = dict(imports=['evil'], allow_failed_imports=False)", "custom_imports (MMEngine imports"),
    ("x: __import__('os').getcwd() = 1", "line 1: a call to __import__"),
    ("x = sorted([2, 1])", "line 1: a call to sorted"),
    ("a = dict(type='os.system', command='touch MARKER')", "a type 'os.system', which MMEngine would import"),
    ("a = {'type': 'subprocess.run', 'args': 'x'}", "a type 'subprocess.run'"),
    ("t = 'mmengine.fileio.dump'\na = dict(type=t)", "line 2: a type 'mmengine.fileio.dump'"),
    ("a = dict(type='x' + '.y')", "line 1: a type given by an expression"),
    ("a = dict([('type', 'os.system')])", "dict() of something other than a dict literal"),
    ("a = {}\nk = 'type'\na[k] = 'os.system'", "line 3: an item assignment with a computed key"),
    ("a = {}\na['type'] = 'os.system'", "line 2: a type 'os.system'"),
    ("x = '{{ fileDirname }}'", "line 1: a '{{ ... }}' substitution"),
    ("x = _base_.__class__", "line 1: attribute access (_base_.__class__)"),
    ("_base_.model.__class__ = dict", "line 1: an assignment to _base_.model.__class__"),
    ("x = {{ _base_.model }} + '{{fileBasename}}'", "line 1: a '{{ ... }}' substitution"),
    ("x = '{{$AWS_SECRET_ACCESS_KEY:none}}'", "line 1: a '{{ ... }}' substitution"),
    ("x = 1\nif x:\n    y = 2", "line 2: a statement other than an assignment"),
    ("_base_ = base_path", "a _base_ that is not a literal path"),
    ("import os as _base_", "line 1: an import"),
])
def test_code_is_named_with_its_file_and_line(tmp_path, line, risk):
    config = _write(tmp_path, "faster_rcnn.py", line + "\nmodel = dict(type='FasterRCNN')\n")
    risks = mmdet_model.code_risks(config)
    assert any(risk in r for r in risks), risks
    with pytest.raises(UntrustedModelError, match="--trust-model-code"):
        check_model_code(mmdet_model, config, trusted=False)
    assert check_model_code(mmdet_model, config, trusted=True) == risks  # trusted: recorded, not refused


@pytest.mark.parametrize("base, risk", [
    ("'../outside.py'", "faster_rcnn.py line 1: a _base_ '../outside.py' outside the model's folder"),
    ("['/etc/outside.py']", "a _base_ '/etc/outside.py' outside the model's folder"),
    ("'~/outside.py'", "a _base_ '~/outside.py' outside the model's folder"),
    ("'mmdet::../../outside.py'", "a _base_ 'mmdet::../../outside.py' outside the package's configs"),
    ("'base.txt'", "a _base_ 'base.txt' that is not a .py, .json or .yaml config"),
])
def test_a_base_outside_the_model_folder_is_a_risk(tmp_path, base, risk):
    model = tmp_path / "model"
    config = _write(model, "faster_rcnn.py", f"_base_ = {base}\nmodel = dict(type='FasterRCNN')\n")
    _write(tmp_path, "outside.py", "model = dict(type='RetinaNet')\n")
    _write(model, "base.txt", "model = dict(type='RetinaNet')\n")
    assert any(r.endswith(risk) for r in mmdet_model.code_risks(config)), mmdet_model.code_risks(config)


def test_a_base_symlinked_out_of_the_model_folder_is_a_risk(tmp_path):
    model = tmp_path / "model"
    _write(tmp_path, "outside.py", "model = dict(type='RetinaNet')\n")
    config = _write(model, "faster_rcnn.py", "_base_ = 'linked.py'\nmodel = dict(type='FasterRCNN')\n")
    os.symlink(tmp_path / "outside.py", model / "linked.py")
    assert mmdet_model.code_risks(config) == ["faster_rcnn.py line 1: a _base_ 'linked.py' outside the model's folder"]


def test_code_in_an_inherited_base_is_found_and_named_with_its_path(tmp_path):
    _write(tmp_path, "configs/_base_/models/faster_rcnn.py", "import os\nmodel = dict(type='FasterRCNN')\n")
    _write(tmp_path, "configs/_base_/runtime.yaml", "hook: !!python/object/apply:os.system ['touch MARKER']\n")
    _write(tmp_path, "configs/_base_/data.json", '{"data_root": "data/"}')
    _write(tmp_path, "configs/detector/bases.py",
           "_base_ = ['../_base_/models/faster_rcnn.py', '../_base_/runtime.yaml', '../_base_/data.json']\n")
    config = _write(tmp_path, "configs/detector.py", "_base_ = './detector/bases.py'\nmodel = dict(type='FasterRCNN')\n")
    assert mmdet_model.code_risks(config) == [
        "_base_/models/faster_rcnn.py line 1: an import (import os)",
        "_base_/runtime.yaml line 1: a YAML tag that constructs Python objects "
        "(tag:yaml.org,2002:python/object/apply:os.system)",
    ]


def test_a_base_cycle_is_checked_once(tmp_path):
    _write(tmp_path, "b.py", "_base_ = 'a.py'\n")
    config = _write(tmp_path, "a.py", "_base_ = 'b.py'\nmodel = dict(type='FasterRCNN')\n")
    assert mmdet_model.code_risks(config) == []


def test_a_config_python_cannot_parse_is_left_to_mmengine_to_refuse(tmp_path):
    config = _write(tmp_path, "a.py", "model = dict(type='FasterRCNN'\n")
    assert mmdet_model.code_risks(config) == []


def test_a_yaml_base_is_checked_because_mmengine_constructs_its_python_tags(tmp_path):
    """MMEngine reads a .yaml base with PyYAML's full Loader: a python tag in it runs."""
    mmengine = pytest.importorskip("mmengine")
    marker = tmp_path / "MARKER"
    base = _write(tmp_path, "base.yaml", f"hook: !!python/object/apply:os.system ['touch {marker}']\n")
    mmengine.load(base)
    assert marker.exists()
    os.remove(marker)
    config = _write(tmp_path, "config.py", "_base_ = 'base.yaml'\nmodel = dict(type='RetinaNet')\n")
    assert mmdet_model.code_risks(config) == [
        "base.yaml line 1: a YAML tag that constructs Python objects (tag:yaml.org,2002:python/object/apply:os.system)"]
    assert not marker.exists()
