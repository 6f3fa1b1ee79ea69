"""Plain PyTorch checkpoints (state_dict pickles): recognised only to be refused helpfully.

A checkpoint holds weights, not the code of the network, so nothing can run it; and loading
it would mean unpickling arbitrary objects from an untrusted file. Detection reads only the
zip directory or the first bytes.
"""

from __future__ import annotations

import os
import zipfile

from accelflow.core.errors import UnsupportedFormatError

NAME = "pytorch-checkpoint"

_PICKLE_PROTOCOL_MARK = 0x80  # every pickle of protocol >= 2 starts with PROTO


def detect(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
        return any(n.endswith("/data.pkl") for n in names) and not any("/code/" in n for n in names)
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == _PICKLE_PROTOCOL_MARK and 2 <= head[1] <= 5


def code_risks(path: str) -> list[str]:
    """What in the model at `path` would run its author's code when loaded: none.

    A plain checkpoint is never loaded: detect_format refuses it before anything reads it.
    """
    return []


def load(path: str):
    raise UnsupportedFormatError(
        f"{path} is a plain PyTorch checkpoint (weights only, saved with torch.save), not a "
        "runnable model. Export it as TorchScript first:\n"
        "    model = MyNet(); model.load_state_dict(torch.load(path, weights_only=True)); model.eval()\n"
        "    torch.jit.trace(model, example_inputs).save('model.pt')   # or torch.jit.script(model)\n"
        "then optimize model.pt (or export to ONNX with torch.onnx.export and optimize that)."
    )


def to_onnx(path, spec, out_dir, example=None):
    load(path)


def baseline_runner(path, spec, io, threads):
    load(path)
