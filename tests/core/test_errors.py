"""core/errors.py: one error hierarchy, the gist of a library's error, and missing parts named
with the command that installs them."""

from __future__ import annotations

import inspect

import pytest
from accelflow.core import errors
from accelflow.core.errors import AccelflowError, MissingDependencyError, first_line, last_line, missing_dependency


def test_every_error_a_user_can_cause_is_an_accelflow_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    assert len(classes) >= 12
    assert all(issubclass(c, AccelflowError) for c in classes)
    assert all(c.__doc__ for c in classes)  # each says when it is raised


def test_first_and_last_line_skip_blank_lines_and_are_cut():
    exc = RuntimeError("\n\n  first problem  \nTraceback (most recent call last):\n  File x\n  last words \n\n")
    assert first_line(exc) == "first problem"
    assert last_line(exc) == "last words"
    assert first_line(RuntimeError("x" * 1000)) == "x" * 400
    assert last_line(RuntimeError("y" * 1000), limit=10) == "y" * 10


def test_an_error_without_text_is_named_by_its_type():
    assert first_line(KeyError()) == last_line(KeyError()) == "KeyError"
    assert first_line(ValueError("   \n  ")) == "ValueError"


@pytest.mark.parametrize("extra", sorted(errors.OPTIONAL_SUPPORT))
def test_a_missing_optional_part_names_its_install_command_and_cost(extra):
    name, cost = errors.OPTIONAL_SUPPORT[extra]
    err = missing_dependency("somelib", extra, why="needed to read this model")
    assert isinstance(err, MissingDependencyError)
    assert str(err) == (f"{name} support is not installed (somelib is missing (needed to read this model)): "
                        f"run `bash scripts/install.sh {extra}` ({cost}).")


def test_a_missing_core_library_points_at_the_core_install():
    assert str(missing_dependency("onnx")) == ("onnx is not installed; the core install brings it: "
                                               "run `bash scripts/install.sh`.")


def test_an_unknown_extra_is_a_bug_not_a_message():
    with pytest.raises(KeyError):
        missing_dependency("x", "no-such-extra")
