"""Output path checks and the all-or-nothing result folder."""

from __future__ import annotations

import os

import pytest
from accelflow.core.errors import OutputPathError
from accelflow.tasks import package


@pytest.mark.parametrize("relative", [".", "results", "results/deeper"])
def test_output_inside_the_model_home_is_refused(tmp_path, relative):
    with pytest.raises(OutputPathError, match="overlaps the model's home directory"):
        package.check_output_path(str(tmp_path / relative), str(tmp_path))


def test_output_containing_the_model_home_is_refused(tmp_path):
    home = tmp_path / "models" / "bert" / "v1"
    home.mkdir(parents=True)
    with pytest.raises(OutputPathError, match="one contains the other"):
        package.check_output_path(str(tmp_path / "models"), str(home))


def test_overlap_through_a_symlink_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(home, tmp_path / "alias")
    with pytest.raises(OutputPathError):
        package.check_output_path(str(tmp_path / "alias" / "out"), str(home))


def test_sibling_output_is_fine_even_with_a_shared_prefix(tmp_path):
    home = tmp_path / "model"
    home.mkdir()
    assert package.check_output_path(str(tmp_path / "model-results"), str(home)) == str(tmp_path / "model-results")


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="not a folder"):
        package.check_output_path(str(tmp_path / "file"), None)


def test_finalize_renames_atomically_and_never_overwrites(tmp_path):
    first = package.start_staging(str(tmp_path))
    (open(os.path.join(first, "a"), "w")).close()
    assert package.finalize_local(first, str(tmp_path), "job-bert-v1#1") == str(tmp_path / "job-bert-v1-1")
    second = package.start_staging(str(tmp_path))
    assert package.finalize_local(second, str(tmp_path), "job-bert-v1#1") == str(tmp_path / "job-bert-v1-1-2")
    assert os.listdir(tmp_path / "job-bert-v1-1") == ["a"]
    assert sorted(os.listdir(tmp_path)) == ["job-bert-v1-1", "job-bert-v1-1-2"]  # no staging or lock left


def test_discard_removes_staging_and_an_output_folder_it_created(tmp_path):
    output = tmp_path / "new"
    staging = package.start_staging(str(output))
    package.discard(staging, str(output))
    assert not output.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "other-result").mkdir()
    package.discard(package.start_staging(str(kept)), str(kept))
    assert os.listdir(kept) == ["other-result"]


def test_unlocked_partials_of_an_older_accelflow_go_once_old_young_ones_stay(tmp_path):
    stale = tmp_path / ".partial-host~123-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    young = tmp_path / ".partial-host~124-young"
    young.mkdir()
    fresh = package.start_staging(str(tmp_path))
    assert not stale.exists() and young.exists() and os.path.isdir(fresh)


def test_a_live_staging_folder_is_locked_and_kept(tmp_path):
    live = package.start_staging(str(tmp_path))
    assert package.remove_stale_partials(str(tmp_path)) == []
    assert os.path.isdir(live.path) and os.path.isfile(live.lock_path)
    live.discard()
    assert os.listdir(tmp_path) == []


def test_uri_outputs_stage_in_local_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELFLOW_SCRATCH", str(tmp_path / "scratch"))
    staging = package.start_staging("s3://bucket/results")
    assert os.path.dirname(staging.path) == str(tmp_path / "scratch")
    staging.discard()


@pytest.mark.parametrize("name,expected", [("a/b", "a-b"), ("../../etc", "etc"), ("", "task"), ("x" * 300, "x" * 120)])
def test_slug_is_filesystem_safe(name, expected):
    assert package.slug(name) == expected


def test_partial_of_a_killed_process_is_removed_at_once_a_live_ones_kept(tmp_path):
    import signal
    import subprocess
    import sys

    code = ("import sys, time; from accelflow.tasks import package; print(package.start_staging(sys.argv[1]).path, flush=True); "
            "time.sleep(60)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    killed = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=root)
    alive = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        killed_partial, alive_partial = killed.stdout.readline().strip(), alive.stdout.readline().strip()
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        mine = package.start_staging(str(tmp_path))
        assert not os.path.exists(killed_partial)  # its lock died with it: removed at once
        assert not os.path.exists(killed_partial + package.LOCK_SUFFIX)
        assert os.path.isdir(alive_partial) and os.path.isdir(mine.path)  # a running task's is kept
    finally:
        alive.kill()
        alive.wait()


def test_uri_outputs_are_checked_for_overlap_too():
    with pytest.raises(OutputPathError, match="overlaps"):
        package.check_output_path("s3://bucket/models", "s3://bucket/models/bert")
    with pytest.raises(OutputPathError, match="overlaps"):
        package.check_output_path("s3://bucket/models/bert/out", "s3://bucket/models/bert")
    assert package.check_output_path("s3://bucket/results/", "s3://bucket/models/bert") == "s3://bucket/results"
    # accelflow's own upload of a submitted model lives under the output, apart from every result
    assert package.check_output_path("s3://bucket/results", "s3://bucket/results/.inputs/abc") == "s3://bucket/results"
