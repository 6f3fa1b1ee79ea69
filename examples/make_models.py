"""Build the example models locally, with random weights and no download.

    python examples/make_models.py cnn  [--out examples/models]   # small ResNet-style CNN, TorchScript
    python examples/make_models.py bert [--out examples/models]   # BERT-base from a transformers config, TorchScript

Each prints the tensor information to pass to `accelflow optimize`.
"""

from __future__ import annotations

import argparse
import os
import warnings

import torch
from torch import nn

CNN_TENSOR_INFO = "input_0:float(1*3*96*96,4*3*96*96)"
BERT_TENSOR_INFO = ["input_ids:int64(1*16,1*128)", "attention_mask:int64(1*16,1*128)"]


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class SmallResNet(nn.Module):
    """A ResNet-style classifier: stem, three stages of residual blocks, pooled head."""

    def __init__(self, classes: int = 100):
        super().__init__()
        layers = [nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
        for cin, cout in ((32, 64), (64, 128), (128, 256)):
            layers += [Block(cin), nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers, Block(256))
        self.head = nn.Linear(256, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def make_cnn(out_dir: str) -> str:
    torch.manual_seed(0)
    model = SmallResNet().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        traced = torch.jit.trace(model, torch.randn(2, 3, 96, 96))
    path = os.path.join(out_dir, "cnn.pt")
    traced.save(path)
    return path


class BertEncoder(nn.Module):
    """BERT-base returning plain tensors (last hidden state, pooled output)."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertModel

        self.bert = BertModel(BertConfig())  # bert-base-uncased architecture, random weights

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.last_hidden_state, out.pooler_output


def make_bert(out_dir: str) -> str:
    torch.manual_seed(0)
    model = BertEncoder().eval()
    ids = torch.randint(0, 30522, (1, 64))
    mask = torch.ones(1, 64, dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace(model, (ids, mask))
    path = os.path.join(out_dir, "bert.pt")
    traced.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["cnn", "bert"])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "models"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    warnings.filterwarnings("ignore")
    if args.model == "cnn":
        print(make_cnn(args.out), "  tensor information:", CNN_TENSOR_INFO)
    else:
        print(make_bert(args.out), "  tensor information:", " ".join(BERT_TENSOR_INFO))


if __name__ == "__main__":
    main()
