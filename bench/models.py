"""Reference models for the benchmark, built locally from public architectures (random weights).

ResNet-50 (He et al. 2015, bottleneck v1.5), BERT-base and ViT-B/16 (from transformers
configurations) and a small convolutional UNet (Ronneberger et al. 2015, reduced width).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))


class HFEncoder(nn.Module):
    """A transformers encoder returning its last hidden state as a plain tensor."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return self.model(*inputs, return_dict=True).last_hidden_state


def bert_base() -> nn.Module:
    from transformers import BertConfig, BertModel

    return HFEncoder(BertModel(BertConfig()))


def vit_b16() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    return HFEncoder(ViTModel(ViTConfig(), add_pooling_layer=False))


def _double_conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class SmallUNet(nn.Module):
    """Four levels, 16-128 channels, transposed-convolution upsampling, skip connections."""

    def __init__(self, channels=(16, 32, 64, 128), classes: int = 2):
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for c in channels:
            self.down.append(_double_conv(cin, c))
            cin = c
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in reversed(channels[1:]))
        self.merge = nn.ModuleList(_double_conv(c, c // 2) for c in reversed(channels[1:]))
        self.head = nn.Conv2d(channels[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


@dataclass
class Reference:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int], tuple]  # batch size -> example inputs
    tensor_info: list[str]  # for batch sizes 1 and 8


def _ids(batch: int) -> tuple:
    return (torch.randint(0, 30522, (batch, 128)), torch.ones(batch, 128, dtype=torch.long))


REFERENCES = (
    Reference("resnet50", ResNet50, lambda b: (torch.randn(b, 3, 224, 224),), ["input_0:float([1*3*224*224,8*3*224*224])"]),
    Reference("bert-base", bert_base, _ids, ["input_0:int64([1*128,8*128])", "input_1:int64([1*128,8*128])"]),
    Reference("vit-b16", vit_b16, lambda b: (torch.randn(b, 3, 224, 224),), ["input_0:float([1*3*224*224,8*3*224*224])"]),
    Reference("unet-small", SmallUNet, lambda b: (torch.randn(b, 3, 256, 256),), ["input_0:float([1*3*256*256,8*3*256*256])"]),
)


def build(reference: Reference) -> nn.Module:
    torch.manual_seed(0)
    model = reference.build().eval()
    with torch.no_grad():  # trained-like batch-norm statistics, so activations stay in range
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model
