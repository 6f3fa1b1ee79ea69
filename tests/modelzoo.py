"""Small real models the tests build themselves (no downloads, a few KB to a few MB each)."""

from __future__ import annotations

import os
import warnings
from typing import Dict, List

import torch
from torch import nn


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


class TwoInputs(nn.Module):
    """A text-like model: token ids and a mask, two outputs (per-token and pooled)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.proj = nn.Linear(32, 32)

    def forward(self, input_ids, attention_mask):
        hidden = torch.tanh(self.proj(self.embed(input_ids)))
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return hidden, pooled


class Nested(nn.Module):
    """Takes a tensor, a dict and a list; returns a tuple holding a dict."""

    def forward(self, x, d: Dict[str, torch.Tensor], items: List[torch.Tensor]):
        total = x * 2.0 + d["bias"]
        return total, {"scaled": d["scale"] * items[0].sum(), "first": items[1] + 1.0}


def _seeded(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, std=0.2)
    return model.eval()


def save_traced(model: nn.Module, example: tuple, path: str) -> str:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, example).save(path)
    return path


def tiny_cnn_torchscript(folder: str) -> str:
    torch.manual_seed(0)
    return save_traced(TinyCNN().eval(), (torch.randn(2, 3, 16, 16),), os.path.join(folder, "cnn.pt"))


def two_inputs_torchscript(folder: str) -> str:
    model = _seeded(TwoInputs())
    example = (torch.randint(0, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    return save_traced(model, example, os.path.join(folder, "text.pt"))


def nested_torchscript(folder: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(Nested())
    path = os.path.join(folder, "nested.pt")
    scripted.save(path)
    return path


def tiny_cnn_onnx(folder: str, *, external_data: bool = False) -> str:
    torch.manual_seed(0)
    path = os.path.join(folder, "cnn.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TinyCNN().eval(), (torch.randn(2, 3, 16, 16),), path, input_names=["image"],
            output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    if external_data:
        import onnx

        model = onnx.load(path)
        onnx.save_model(model, path, save_as_external_data=True, location="cnn.onnx.data", size_threshold=0)
    return path


def checkpoint(folder: str) -> str:
    path = os.path.join(folder, "weights.pth")
    torch.save(TinyCNN().state_dict(), path)
    return path


class SlowLoop(nn.Module):
    """About 30 GFLOP per call from 1 MB of weights: slow enough to stop mid-benchmark."""

    def __init__(self, steps: int = 120):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(512, 512) * 0.04)
        self.steps = steps

    def forward(self, x):
        for _ in range(self.steps):
            x = torch.tanh(x @ self.weight)
        return x


def slow_torchscript(folder: str) -> str:
    torch.manual_seed(0)
    return save_traced(SlowLoop().eval(), (torch.randn(256, 512),), os.path.join(folder, "slow.pt"))


class QatCNN(nn.Module):
    """TinyCNN between QuantStub and DeQuantStub, for eager-mode quantization-aware training."""

    def __init__(self):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.quant, self.dequant = QuantStub(), DeQuantStub()
        self.conv1, self.relu1 = nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(self.quant(x)))))
        return self.dequant(self.head(torch.flatten(self.pool(x), 1)))


def qat_torchscript(folder: str) -> str:
    """A QAT-prepared model after a few training steps, traced with its fake-quantize modules."""
    from torch.ao import quantization as tq

    torch.manual_seed(0)
    model = QatCNN().train()
    model.qconfig = tq.get_default_qat_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare_qat(model, inplace=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(8):  # observers settle on the activation ranges
            loss = model(torch.randn(8, 3, 16, 16)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.apply(tq.disable_observer).eval()
    return save_traced(model, (torch.randn(2, 3, 16, 16),), os.path.join(folder, "qat.pt"))


def qdq_onnx(folder: str) -> str:
    """TinyCNN quantized statically by ONNX Runtime's tooling into QDQ format."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    fp32 = tiny_cnn_onnx(folder)

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"image": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    path = os.path.join(folder, "cnn_qdq.onnx")
    quantize_static(fp32, path, Reader(), quant_format=QuantFormat.QDQ)
    os.remove(fp32)
    return path


class MemoryHog(nn.Module):
    """Allocates 8 GiB per batch item in forward (scripted, so saving it allocates nothing)."""

    def forward(self, x):
        big = torch.ones(x.shape[0] * (1 << 30), dtype=torch.float64)
        return x * big[0]


def memory_hog_torchscript(folder: str) -> str:
    path = os.path.join(folder, "hog.pt")
    torch.jit.script(MemoryHog()).save(path)
    return path


def deep_mlp_torchscript(folder: str, layers: int = 48, width: int = 384) -> str:
    """Many layers: its ONNX graph takes each engine a noticeable time to build."""
    torch.manual_seed(0)
    blocks = [m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())]
    return save_traced(nn.Sequential(*blocks).eval(), (torch.randn(2, width),), os.path.join(folder, "deep.pt"))


def endless_loop_onnx(folder: str) -> str:
    """y = x + 10^15: an ONNX Loop adding 1 to x 10^15 times, run natively inside ONNX Runtime or
    OpenVINO, where no Python exception reaches it (only killing the process stops it)."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body)],
        "endless", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("trips", TensorProto.INT64, [], [10**15]),
         helper.make_tensor("keep_going", TensorProto.BOOL, [], [True])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = os.path.join(folder, "endless.onnx")
    onnx.save(model, path)
    return path


class OutlierMLP(nn.Module):
    """Three linear layers; the second writes five channels 1000x larger than the rest, which
    the third does not read. One uint8 scale for that tensor rounds the channels the third needs
    to zero: INT8 fails the gate until the third layer is kept in float."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 16)
        with torch.no_grad():
            self.b.weight[:5] *= 1000.0
            self.c.weight[:, :5] = 0.0

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def outlier_mlp_torchscript(folder: str) -> str:
    torch.manual_seed(0)
    return save_traced(OutlierMLP().eval(), (torch.randn(2, 32),), os.path.join(folder, "outlier.pt"))


def outlier_mlp_onnx(folder: str) -> str:
    """The same network in ONNX (input `x`), its last layer's node named `/c/Gemm`."""
    torch.manual_seed(0)
    path = os.path.join(folder, "outlier.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(OutlierMLP().eval(), (torch.randn(2, 32),), path, input_names=["x"], output_names=["scores"],
                          dynamic_axes={"x": {0: "batch"}, "scores": {0: "batch"}}, dynamo=False)
    return path


def paddle_style_fpn_onnx(folder: str) -> str:
    """A small FPN written as Paddle2ONNX writes graphs: opset 11, every weight a Constant node,
    dynamic height and width merged through Resize and Add (ONNX Runtime's symbolic shape
    inference gives up on it). Output channels' weights span three orders of magnitude, so a
    weight rounded with one scale for the whole tensor loses the small ones (input `x`)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = []

    def constant(name: str, array) -> str:
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name)))
        return name

    def conv(name: str, source: str, cin: int, cout: int, kernel: int, stride: int) -> str:
        spread = np.logspace(-2, 1, cout).astype(np.float32)[:, None, None, None]
        weight = rng.standard_normal((cout, cin, kernel, kernel)).astype(np.float32) * spread / (cin * kernel) ** 0.5
        bias = rng.standard_normal(cout).astype(np.float32) * 0.1
        nodes.append(helper.make_node("Conv", [source, constant(f"{name}.w", weight), constant(f"{name}.b", bias)],
                                      [f"{name}.out"], kernel_shape=[kernel] * 2, strides=[stride] * 2,
                                      pads=[kernel // 2] * 4, name=f"p2o.{name}"))
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.act"]))
        return f"{name}.act"

    fine = conv("conv0", "x", 3, 16, 3, 2)
    coarse = conv("conv1", fine, 16, 16, 3, 2)
    scales = constant("scales", np.array([1, 1, 2, 2], np.float32))
    nodes.append(helper.make_node("Resize", [coarse, constant("roi", np.zeros(0, np.float32)), scales], ["up"],
                                  mode="nearest"))
    nodes.append(helper.make_node("Add", [fine, "up"], ["merged"]))
    head = conv("conv2", "merged", 16, 8, 1, 1)
    graph = helper.make_graph(nodes, "fpn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info(head, TensorProto.FLOAT, None)])
    path = os.path.join(folder, "paddle_fpn.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), path)
    return path
