"""Hostile Stable Diffusion pipeline folders, built from a good one: their loading would import
code the folder ships (issue 17). The code only writes a marker file, so a test can tell
whether it ran."""

from __future__ import annotations

import json
import os
import shutil
import uuid

# Its import writes MARKER; its class is diffusers' PNDMScheduler under another name, so a
# trusted load gets a working pipeline.
SCHEDULER_MODULE = '''open({marker!r}, "w").write("ran")
from diffusers import PNDMScheduler


class HostileScheduler(PNDMScheduler):
    pass
'''


def _edit_json(path: str, **changes) -> None:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    data.update(changes)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def custom_scheduler(good: str, dest: str, marker: str) -> tuple[str, str]:
    """A copy of the pipeline `good` whose scheduler is a custom component: model_index.json
    names `["<module>", "HostileScheduler"]` and scheduler/<module>.py writes `marker` when
    imported. Returns (folder, module name); the module name is new each call, so no import
    cached by an earlier test hides a run."""
    shutil.copytree(good, dest)
    module = f"sched_{uuid.uuid4().hex[:8]}"
    with open(os.path.join(dest, "scheduler", f"{module}.py"), "w", encoding="utf-8") as f:
        f.write(SCHEDULER_MODULE.format(marker=marker))
    _edit_json(os.path.join(dest, "model_index.json"), scheduler=[module, "HostileScheduler"])
    _edit_json(os.path.join(dest, "scheduler", "scheduler_config.json"), _class_name="HostileScheduler")
    return dest, module


def name_module(index_path: str, component: str, module: str, class_name: str = "Anything") -> None:
    """Edit a model_index.json so that `component` comes from library `module`."""
    _edit_json(index_path, **{component: [module, class_name]})
