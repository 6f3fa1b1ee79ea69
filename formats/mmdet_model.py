"""MMDetection detectors: a config file (.py, detected by content) and its checkpoint (.pth).

The model file is the config; its checkpoint is the one PyTorch checkpoint beside it (or the
one named like it). Input structure: the framework's own `inputs` list of CHW images in BGR
pixel values, as `model.test_step({"inputs": [...], ...})` takes them:

    inputs[0]:float(3*320*320,3*800*1333)

The image is taken at the size given (no resize: declare the sizes the model serves at).

What goes to ONNX: the data preprocessor (BGR->RGB, mean/std, zero padding to the size
divisor, all in the graph, dynamic sizes) + backbone + neck, and the RPN's (or RetinaNet
head's) convolutions: the feature graph, which the engine runs. The RoI heads (RoIAlign, box
and mask heads, every cascade stage) become head graphs beside it, run in ONNX Runtime
(formats/mmdet_roi_heads.py). Proposal decoding, box decoding, NMS and mask pasting run
after them in PyTorch, MMDetection's own code (`model.predict` with `extract_feat`, the
dense head's forward and the RoI head's forwards answered by the graphs): data-dependent
selection that mmcv 2.x does not export (docs/detectors.md). The result, original or
optimized, is one dict per image: bboxes, scores, labels (and masks for a mask head), see
formats/detections.py.

Security: an MMDetection config is Python that MMEngine executes when it reads it. Unless the
model is trusted (--trust-model-code), `code_risks` checks the config and its `_base_` files
without running them (plain data only: literals, names, arithmetic, dict()/list() calls; no
imports, other calls, attribute access or custom_imports; bases inside the model's folder or
an installed package's configs), and `load` refuses a `type` MMDetection has not registered,
which MMEngine would import by name. The checkpoint is read with torch.load(weights_only=True).
"""

from __future__ import annotations

import ast
import os
import re
import sys

import numpy as np
from accelflow.core.errors import ModelMismatchError, UnsupportedFormatError, first_line, missing_dependency
from accelflow.core.modelio import ModelIO, flat_structure
from accelflow.formats import detections, mmdet_roi_heads
from accelflow.formats.detections import quiet as _quiet
from accelflow.formats.roi_graphs import heads_label

NAME = "mmdet"
# Bumped when the conversion's files change (2: RoI head graphs, dense head in the feature graph),
# so that cached conversions of an older kind are not reused (tasks/convert.py keys on it).
EXPORT_VERSION = 2
_MODEL_LINE = re.compile(r"^model\s*=\s*dict\(", re.M)


def detect(path: str) -> bool:
    """A Python config assigning `model = dict(type=...)`, as MMDetection configs do."""
    text = detections.config_text(path)
    return text is not None and bool(_MODEL_LINE.search(text)) and "type=" in text.replace(" ", "")


def code_risks(path: str) -> list[str]:
    """What in the config at `path`, or in a `_base_` file it inherits, would run code when
    MMEngine reads it: anything but plain data (an AST check; nothing is executed)."""
    home = os.path.dirname(os.path.realpath(path))
    return _file_risks(os.path.abspath(path), home, set())


# MMEngine executes a .py config, and reads bases and types by name; what may appear in a config
# that is plain data, and why the rest is refused, is in code_risks' checks below.
_DATA_CALLS = ("dict", "list", "tuple", "set")
_SCOPED_TYPE = re.compile(r"^(?:mm[a-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$")  # ResNet, mmdet.ResNet
# MMEngine pastes {{ fileDirname }} (a folder name: text the model's author may choose) and
# {{$ENV_VAR:default}} (the worker's environment: its secrets) into the code text before running
# it; {{_base_.a.b}} becomes a reference to a base's value (names only: plain data).
_SUBSTITUTION = re.compile(r"\{\{(?!\s*_base_(\.\w+)+\s*\}\})")
_STATEMENTS = {ast.Import: "an import", ast.ImportFrom: "an import", ast.FunctionDef: "a function definition",
               ast.AsyncFunctionDef: "a function definition", ast.ClassDef: "a class definition",
               ast.With: "a with block (a new-style config's `with read_base():` imports its bases)"}


def _file_risks(path: str, home: str, seen: set) -> list[str]:
    """The risks of one config file (.py, .json, .yaml) and, recursively, of its bases."""
    real = os.path.realpath(path)
    if real in seen:  # an inheritance cycle: MMEngine refuses it itself
        return []
    seen.add(real)
    label = os.path.relpath(real, home)
    if real.endswith(".json"):
        return []
    if real.endswith((".yaml", ".yml")):
        return detections.yaml_risks(real, label)[1]
    text = detections.config_text(real)
    if text is None:
        return [f"{label}: a config too large or not text, which was not checked"] if os.path.isfile(real) else []
    try:
        tree = ast.parse(text, filename=label)
    except SyntaxError:  # MMEngine refuses it before running anything
        return []
    risks = [f"{label} line {n}: a '{{{{ ... }}}}' substitution, which MMEngine pastes into the code as text"
             for n, line in enumerate(text.splitlines(), 1) if _SUBSTITUTION.search(line)]
    checker = _ConfigChecker()
    for i, stmt in enumerate(tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # the module docstring
        checker.statement(stmt)
    risks += [f"{label} line {line}: {what}" for line, what in sorted(checker.found, key=lambda f: f[0])]
    for base in checker.bases:
        risks += _base_risks(base, real, home, label, seen)
    return risks


def _base_risks(base, config: str, home: str, label: str, seen: set) -> list[str]:
    """A `_base_` entry: a file inside the model's folder, or a config of an installed package
    (`mmdet::faster_rcnn/x.py`, read from the package itself)."""
    line, name = base
    if "::" in name:
        inside = name.split("::", 1)[1]
        if os.path.isabs(inside) or ".." in inside.replace("\\", "/").split("/"):
            return [f"{label} line {line}: a _base_ {name!r} outside the package's configs"]
        return []
    target = os.path.realpath(os.path.join(os.path.dirname(config), os.path.expanduser(name)))
    if os.path.commonpath([target, home]) != home:
        return [f"{label} line {line}: a _base_ {name!r} outside the model's folder"]
    if not target.endswith((".py", ".json", ".yaml", ".yml")):
        return [f"{label} line {line}: a _base_ {name!r} that is not a .py, .json or .yaml config"]
    return _file_risks(target, home, seen)


class _ConfigChecker:
    """Walks a config's statements; `found` collects (line, what) for everything that is not
    plain data, `bases` the (line, path) of its `_base_` entries."""

    def __init__(self):
        self.found: list[tuple[int, str]] = []
        self.bases: list[tuple[int, str]] = []
        self.bound: set[str] = {"_base_"}  # names assigned so far (MMEngine binds _base_)
        self.strings: dict[str, str] = {}  # names bound to a string constant (a type given by name)

    def refuse(self, node, what: str) -> None:
        self.found.append((getattr(node, "lineno", 0), what))

    def statement(self, stmt) -> None:
        if isinstance(stmt, ast.Assign):
            self.expr(stmt.value)
            for target in stmt.targets:
                self.target(target, stmt.value)
        elif isinstance(stmt, ast.AugAssign):
            self.expr(stmt.value)
            self.target(stmt.target, None)
        elif isinstance(stmt, ast.AnnAssign):  # the annotation is evaluated too
            self.expr(stmt.annotation)
            if stmt.value is not None:
                self.expr(stmt.value)
            self.target(stmt.target, stmt.value)
        else:
            what = next((w for kind, w in _STATEMENTS.items() if isinstance(stmt, kind)), None)
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                what = f"{what} ({_shown(stmt)})"
            self.refuse(stmt, what or f"a statement other than an assignment ({_shown(stmt)})")
            if what is None:
                self.expr_parts(stmt)  # what it would run, named too (e.g. a call to __import__)

    def expr_parts(self, stmt) -> None:
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.expr):
                self.expr(child)

    def target(self, node, value) -> None:
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                self.refuse(node, f"the name {node.id}")
            elif node.id == "custom_imports":
                self.refuse(node, "custom_imports (MMEngine imports those modules)")
            elif node.id == "_base_":
                self.base(node, value)
            self.bound.add(node.id)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                self.strings[node.id] = value.value
            else:
                self.strings.pop(node.id, None)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.target(element.value if isinstance(element, ast.Starred) else element, None)
        elif isinstance(node, ast.Subscript):
            self.expr(node.value)
            if not (isinstance(node.slice, ast.Constant)):
                self.refuse(node, "an item assignment with a computed key")
            elif node.slice.value == "type" and value is not None:
                self.type_value(value)
        elif not _base_reference(node):
            self.refuse(node, f"an assignment to {_shown(node)}")

    def base(self, node, value) -> None:
        names = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
        for name in names:
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                self.bases.append((node.lineno, name.value))
            else:
                self.refuse(node, "a _base_ that is not a literal path")

    def type_value(self, node) -> None:
        """A `type` names what the registry builds; a name it has not registered MMEngine imports
        (`type='os.system'` would call os.system): only registry names are plain data."""
        name = node.value if isinstance(node, ast.Constant) else self.strings.get(getattr(node, "id", None))
        if _base_reference(node):  # a base's type: checked where the base sets it
            return
        if not isinstance(name, str):
            self.refuse(node, f"a type given by an expression ({_shown(node)})")
        elif not _SCOPED_TYPE.match(name):
            self.refuse(node, f"a type {name!r}, which MMEngine would import by name")

    def expr(self, node) -> None:
        if isinstance(node, ast.Constant):
            return
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                self.refuse(node, f"the name {node.id}")
            elif node.id not in self.bound:
                self.refuse(node, f"the name {node.id}, not assigned in this config (a builtin)")
        elif isinstance(node, ast.Call):
            self.call(node)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is not None and not isinstance(key, ast.Constant):
                    self.refuse(key, "a computed dict key")
                elif key is not None and key.value == "type":
                    self.type_value(value)
                self.expr(value)
        elif isinstance(node, ast.Attribute):
            if not _base_reference(node):
                self.refuse(node, f"attribute access ({_shown(node)})")
                self.expr(node.value)
        elif isinstance(node, ast.Lambda):
            self.refuse(node, "a lambda")
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            self.refuse(node, "a comprehension")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
                               ast.IfExp, ast.Subscript, ast.Slice, ast.Starred, ast.JoinedStr, ast.FormattedValue,
                               ast.keyword)):
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, (ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)):
                    self.expr(child)
        else:
            self.refuse(node, f"a {type(node).__name__} expression")

    def call(self, node) -> None:
        func = node.func
        if not (isinstance(func, ast.Name) and func.id in _DATA_CALLS):
            self.refuse(node, f"a call to {_shown(func)}")
            if not isinstance(func, ast.Name):
                self.expr(func.value if isinstance(func, ast.Attribute) else func)
        elif func.id == "dict":  # a dict built from pairs could hide a computed `type` key
            for arg in node.args:
                if not (isinstance(arg, ast.Dict) or _is_call_of(arg, "dict")):
                    self.refuse(arg, "dict() of something other than a dict literal")
        for arg in node.args:
            self.expr(arg)
        for keyword in node.keywords:
            if keyword.arg == "type":
                self.type_value(keyword.value)
            self.expr(keyword.value)


def _base_reference(node) -> bool:
    """`_base_.a.b`: a value of the inherited config (a ConfigDict of plain data), read or set
    by name. A dunder attribute (`_base_.__class__`) is no value of it."""
    while isinstance(node, ast.Attribute):
        if node.attr.startswith("__"):
            return False
        node = node.value
    return isinstance(node, ast.Name) and node.id == "_base_"


def _is_call_of(node, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _shown(node, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def checkpoint_for(config: str) -> str:
    return detections.checkpoint_for(config, "MMDetection")


def import_mmdet():
    try:
        import mmdet  # noqa: F401  (imports mmcv.ops: needs mmcv built with its ops)
        from mmdet.utils import register_all_modules
    except ImportError as exc:
        raise missing_dependency("mmdet, mmengine or mmcv with its compiled ops", "mmdet", first_line(exc)) from exc
    register_all_modules(init_default_scope=True)


def load(path: str, trusted: bool = False):
    """The detector built from the config, weights from its checkpoint, in eval mode on the CPU.

    Unless `trusted`, every `type` in the model's config must be a name MMDetection registered:
    for any other name MMEngine's registry imports it (`type='os.system'` calls os.system)."""
    import_mmdet()
    from mmdet.registry import MODELS

    checkpoint = checkpoint_for(path)
    with _quiet():
        cfg = _read_config(path, trusted)
    try:
        with _quiet():
            model = MODELS.build(cfg.model)
    except Exception as exc:
        raise UnsupportedFormatError(f"{path}: MMDetection could not build the model of this config: {first_line(exc)}") from exc
    detections.load_weights(model, checkpoint, path, "state_dict")
    model.cfg = cfg
    return model.eval()


def _read_config(path: str, trusted: bool):
    """The config read by MMEngine (which executes it: code_risks has checked it before, at
    preflight, fetch or result loading), its model's types checked unless trusted."""
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(path)
    except Exception as exc:
        raise UnsupportedFormatError(f"{path}: MMEngine could not read this config: {first_line(exc)}") from exc
    if not trusted:
        unknown = sorted(set(unregistered_types(cfg.model)))
        if unknown:
            from accelflow.core.errors import untrusted_model

            raise untrusted_model(path, NAME, [f"a type {t!r} that MMDetection has not registered, which MMEngine "
                                               "would import by name (or mmcv/mmdet would eval)" for t in unknown])
    return cfg


def unregistered_types(model_cfg) -> list[str]:
    """The `type` names in a config's dicts (recursively) that no MMEngine/MMDetection registry
    holds and that name something importable (MMEngine's registry would import it: a dotted
    path, or a module on sys.path), and the other strings the frameworks eval(). Some types are
    no registry names and stay allowed (an RoI layer's `RoIAlign`, an mmcv.ops attribute; a
    cascade RPN's `dilation`). An `nms` dict's type is no registry name either:
    mmcv's batched_nms eval()s it, so it must name one of mmcv.ops' NMS functions; mmdet's
    CameraMotionCompensation eval()s its `warp_mode` (an OpenCV constant's name)."""
    return _unregistered(model_cfg, None, _registered_names())


_WARP_MODE = re.compile(r"^cv2\.MOTION_[A-Z]+$")


def _unregistered(node, key: str | None, names: dict) -> list[str]:
    found = []
    if isinstance(node, dict):
        kind = node.get("type")
        known = _mmcv_nms(kind) if key == "nms" else isinstance(kind, str) and (
            _registered(kind, names) or not _importable(kind))
        if "type" in node and not known:
            found.append(kind if isinstance(kind, str) else repr(kind))
        if "warp_mode" in node and not _WARP_MODE.match(str(node["warp_mode"])):
            found.append(str(node["warp_mode"]))
        found += [t for k, v in node.items() for t in _unregistered(v, k, names)]
    elif isinstance(node, (list, tuple)):
        found += [t for item in node for t in _unregistered(item, key, names)]
    return found


def _importable(name: str) -> bool:
    """Whether MMEngine's get_object_from_string could import `name` (found, not imported)."""
    import importlib.util

    if "." in name or not name.isidentifier():
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return True


def _mmcv_nms(kind) -> bool:
    import importlib

    nms_module = importlib.import_module("mmcv.ops.nms")  # (mmcv.ops.nms, the attribute, is the function)
    op = getattr(nms_module, kind, None) if isinstance(kind, str) and kind.isidentifier() else None
    return callable(op) and getattr(op, "__module__", "").startswith("mmcv.ops")


def _registered(kind: str, names: dict[str | None, set[str]]) -> bool:
    scope, _, name = kind.rpartition(".")
    if scope:
        return name in names.get(scope, set())
    return any(name in held for held in names.values())


def _registered_names() -> dict[str | None, set[str]]:
    """scope -> every name registered in a registry of that scope (MMEngine's root registries
    and their children, mmdet's among them: import_mmdet() has registered all of its modules)."""
    import mmengine.registry as roots
    from mmengine.registry import Registry

    names: dict[str | None, set[str]] = {}
    stack = [r for r in vars(roots).values() if isinstance(r, Registry)]
    while stack:
        registry = stack.pop()
        names.setdefault(registry.scope, set()).update(registry.module_dict)
        stack.extend(registry.children.values())
    return names


def check_spec(spec) -> None:
    leaves = spec.leaves
    if spec.root != "kwargs" or len(leaves) != 1 or leaves[0].name != "inputs[0]" or leaves[0].shape.rank != 3:
        raise ModelMismatchError(
            "an MMDetection model takes one image per call: give tensor information "
            "inputs[0]:float(3*H*W) (or a range of sizes, e.g. inputs[0]:float(3*320*320,3*800*1333)), "
            f"not {', '.join(l.name for l in leaves)}."
        )


def _sample(image_shape, pad: int | None = None):
    from mmdet.structures import DetDataSample

    h, w = int(image_shape[-2]), int(image_shape[-1])
    meta = {"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0)}
    if pad:
        padded = (-(-h // pad) * pad, -(-w // pad) * pad)
        meta.update(pad_shape=padded, batch_input_shape=padded)
    return DetDataSample(metainfo=meta)


def _instances(sample) -> dict:
    pred = sample.pred_instances
    out = {"bboxes": pred.bboxes.detach().float().numpy(), "scores": pred.scores.detach().float().numpy(),
           "labels": pred.labels.detach().long().numpy()}
    if "masks" in pred:
        out["masks"] = pred.masks.detach().cpu().numpy().astype(bool)
    return out


class MMDetBaseline(detections.DetectorBaseline):
    """The original detector in MMDetection: `model.test_step` (data preprocessor, predict)."""

    def __init__(self, path: str, spec, io: ModelIO, threads: int, trusted: bool = False):
        super().__init__(load(path, trusted), f"mmdet {_version()}", threads)

    def prepare(self, arrays):
        image = self.torch.from_numpy(np.ascontiguousarray(arrays[0], dtype=np.float32))
        return {"inputs": [image], "data_samples": [_sample(image.shape)]}

    def infer(self, feed):
        return self.model.test_step(feed)

    instances = staticmethod(_instances)


def baseline_runner(path: str, spec, io: ModelIO, threads: int, trusted: bool = False) -> MMDetBaseline:
    return MMDetBaseline(path, spec, io, threads, trusted)


def postprocessor(config: str, io: dict, trusted: bool = False):
    """MMDetection's box decoding and NMS on the engine's outputs (formats/detections.py wraps an
    engine's runner with it): the FPN features, then the dense head's maps where the feature
    graph holds them; the RoI heads run in their ONNX graphs where the conversion wrote them
    (io.source's `roi_heads`, see detections.head_graphs_folder), else in PyTorch."""
    import torch

    model = load(config, trusted)
    divisor = int(getattr(model.data_preprocessor, "pad_size_divisor", 1))
    source = io.get("source") or {}
    graphs = source.get("roi_heads") or []
    detections.beside_config(sys.modules[__name__], source)  # plain names: nothing outside the folder
    folder = detections.head_graphs_folder(source, config)
    sessions = mmdet_roi_heads.attach(model.roi_head, graphs, folder, torch.get_num_threads()) if graphs else {}
    split = _Split(source.get("features"), source.get("dense_head"))

    def postprocess(outputs, arrays):
        tensors = [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outputs]
        feats, maps = split(tensors)
        samples = [_sample(arrays[0].shape, divisor)]
        return [_instances(s) for s in predict_from_features(model, feats, samples, maps)]

    postprocess.label = "mmdet NMS (torch)" + (f", {heads_label(graphs)}" if graphs else ", heads (torch)")
    postprocess.head_graphs = sessions  # (kind, stage) -> HeadGraph: INT8 calibration records their feeds
    return postprocess


class _Split:
    """The engine's outputs -> (FPN features, the dense head's outputs or None): `features` is
    how many outputs are features, `dense` how many maps each list of the head's output holds."""

    def __init__(self, features: int | None, dense: list[int] | None):
        self.features, self.dense = features, dense

    def __call__(self, tensors):
        if not self.dense:
            return tuple(tensors), None
        maps, at = [], self.features
        for count in self.dense:
            maps.append(tensors[at:at + count])
            at += count
        return tuple(tensors[:self.features]), tuple(maps)


def save_config(config: str, folder: str, trusted: bool = False) -> str:
    """The config with its _base_ files merged, as <folder>/config.py (a result's copy)."""
    import_mmdet()
    target = os.path.join(folder, "config.py")
    with _quiet():
        _read_config(config, trusted).dump(target)
    return target


def predict_from_features(model, feats, samples, dense_maps=None):
    """`model.predict` with the backbone and neck answered by `feats` (the engine's outputs),
    and the dense head's forward by `dense_maps` where the engine computed them too."""
    import torch

    model.extract_feat = lambda _inputs: feats
    head = _dense_head(model)
    if dense_maps is not None:
        head.forward = lambda _x: dense_maps
    try:
        with torch.no_grad(), _quiet():
            return model.predict(None, samples, rescale=True)
    finally:
        del model.extract_feat
        if dense_maps is not None:
            del head.forward


# Dense heads whose predict is `self(x)` then predict_by_feat on a tuple of per-level lists:
# their convolutions go into the feature graph (others stay in PyTorch).
_DENSE_IN_GRAPH = ("RPNHead", "RetinaHead")


def _dense_head(model):
    """The RPN of a two-stage detector, the head of a single-stage one (or None)."""
    return getattr(model, "rpn_head", None) or getattr(model, "bbox_head", None)


def _dense_in_graph(model) -> bool:
    head = _dense_head(model)
    return head is not None and type(head).__name__ in _DENSE_IN_GRAPH


def _feature_graph(model, dense: bool = False):
    """preprocess (in graph) + backbone + neck, as one nn.Module taking one CHW BGR image;
    with `dense`, the dense head's per-level maps follow the features, list by list."""
    import torch
    import torch.nn.functional as F

    pre = model.data_preprocessor  # its batch_augments apply in training only

    class _Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.divisor = int(getattr(pre, "pad_size_divisor", 1))
            self.pad_value = float(getattr(pre, "pad_value", 0))

        def forward(self, image):
            x = image.unsqueeze(0).float()
            if getattr(pre, "_channel_conversion", False):
                x = x[:, [2, 1, 0], ...]
            if getattr(pre, "_enable_normalize", False):
                x = (x - pre.mean.view(1, -1, 1, 1)) / pre.std.view(1, -1, 1, 1)
            h, w = x.shape[-2], x.shape[-1]
            d = self.divisor
            x = F.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d), value=self.pad_value)
            feats = tuple(self.model.extract_feat(x))
            if not dense:
                return feats
            return feats + tuple(m for maps in _dense_head(self.model)(feats) for m in maps)

    return _Features().eval()


def to_onnx(path: str, spec, out_dir: str, example: list, trusted: bool = False) -> tuple[str, ModelIO]:
    """The feature graph (model.onnx: preprocessing, backbone, neck and the dense head's
    convolutions) and, beside it, the RoI heads' graphs (formats/mmdet_roi_heads.py)."""
    import torch

    check_spec(spec)
    model = load(path, trusted)
    image = torch.from_numpy(np.ascontiguousarray(example[0], dtype=np.float32))
    with torch.no_grad(), _quiet():
        features = _feature_graph(model)(image)
        masks = "masks" in _instances(model.test_step({"inputs": [image], "data_samples": [_sample(image.shape)]})[0])
        dense = [len(maps) for maps in _dense_head(model)(features)] if _dense_in_graph(model) else None
    graph = _feature_graph(model, dense=bool(dense))
    output_names = [f"feature_{i}" for i in range(len(features))]
    output_names += [f"dense_{j}_{i}" for j, count in enumerate(dense or []) for i in range(count)]
    onnx_path, input_names = detections.export_features(graph, image, spec, out_dir, output_names,
                                                        "MMDetection backbone and neck")
    roi_heads = mmdet_roi_heads.export(model, features, image.shape[-2:], out_dir)
    source = {"detector": NAME, "postprocess": _postprocess_text(dense, roi_heads),
              **detections.own_copies(sys.modules[__name__], path, out_dir, trusted),
              "features": len(features), "dense_head": dense, "roi_heads": roi_heads,
              "score_thr": score_threshold(model.cfg), "max_detections": max_detections(model.cfg),
              "detections_structure": detections.output_structure(1, masks)}
    # The engine's own outputs are the FPN features (and dense maps); detections come after post-processing.
    return onnx_path, ModelIO(input_names, output_names, flat_structure(len(output_names)), source)


def files_beside_config(source: dict) -> list[str]:
    """The RoI heads' graphs of a conversion: files beside its config (formats/detections.py)."""
    return [g["file"] for g in source.get("roi_heads") or []]


def _postprocess_text(dense, roi_heads) -> str:
    parts = ["dense head convolutions in the engine" if dense else "dense head in torch"]
    parts.append("RoI heads in onnxruntime" if roi_heads else "RoI heads (if any) in torch")
    return ", ".join(parts) + "; box decoding and NMS in torch (mmdet)"


def score_threshold(cfg) -> float:
    """The detector's own final score threshold (RoI head's for two-stage detectors)."""
    test_cfg = cfg.model.get("test_cfg") or {}
    final = test_cfg.get("rcnn", test_cfg) or {}
    return float(final.get("score_thr", 0.0) or 0.0)


def max_detections(cfg) -> int | None:
    test_cfg = cfg.model.get("test_cfg") or {}
    final = test_cfg.get("rcnn", test_cfg) or {}
    return final.get("max_per_img")


def _version() -> str:
    import mmdet

    return mmdet.__version__
