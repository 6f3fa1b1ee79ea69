"""engines/pipeline_result.py: a result's small components come from diffusers or transformers;
any other module its model_index.json names is imported only with trust_model_code."""

from __future__ import annotations

import pytest
from accelflow.core.errors import UntrustedModelError
from accelflow.engines.pipeline_result import load_component

from tests.diffusers_hostile import custom_scheduler

pytest.importorskip("diffusers", reason="Stable Diffusion pipelines need the diffusers extra")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from examples.make_sd import make_pipeline

    return make_pipeline(str(tmp_path_factory.mktemp("sd") / "tiny-sd"), "tiny")


def test_a_diffusers_component_loads_without_trust(tiny):
    from diffusers import PNDMScheduler

    assert type(load_component(tiny, ["diffusers", "PNDMScheduler"], "scheduler")) is PNDMScheduler


def test_a_custom_component_file_is_imported_only_when_trusted(tiny, tmp_path):
    marker = tmp_path / "MARKER"
    folder, module = custom_scheduler(tiny, str(tmp_path / "p"), str(marker))
    with pytest.raises(UntrustedModelError, match=f"component scheduler: {module}.HostileScheduler .*trust_model_code"):
        load_component(folder, [module, "HostileScheduler"], "scheduler")
    assert not marker.exists()
    scheduler = load_component(folder, [module, "HostileScheduler"], "scheduler", trust_model_code=True)
    assert marker.exists() and type(scheduler).__name__ == "HostileScheduler"


def test_an_importable_module_named_by_the_index_is_never_imported_untrusted(tiny, tmp_path, monkeypatch):
    """Any module on the path runs when imported: the old loader imported whatever was named."""
    marker = tmp_path / "MARKER"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "hostile_lib_x1.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    with pytest.raises(UntrustedModelError, match="would import hostile_lib_x1"):
        load_component(tiny, ["hostile_lib_x1", "PNDMScheduler"], "scheduler")
    assert not marker.exists()


def test_a_module_shipped_under_a_library_name_is_not_imported_untrusted(tiny, tmp_path):
    import shutil

    marker = tmp_path / "MARKER"
    folder = shutil.copytree(tiny, str(tmp_path / "p"))
    (tmp_path / "p" / "scheduler" / "diffusers.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(UntrustedModelError, match="would import scheduler/diffusers.py"):
        load_component(folder, ["diffusers", "PNDMScheduler"], "scheduler")
    assert not marker.exists()


def test_a_pipeline_submodule_is_looked_up_inside_diffusers(tiny, tmp_path, monkeypatch):
    """Not as a top-level module of that name, which could be anything on the path."""
    marker = tmp_path / "MARKER"
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "stable_diffusion.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    from diffusers import PNDMScheduler

    scheduler = load_component(tiny, ["stable_diffusion", "PNDMScheduler"], "scheduler")
    assert type(scheduler) is PNDMScheduler and not marker.exists()
