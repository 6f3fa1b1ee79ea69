"""core/links.py: a model folder's files, never following a link out of the folder."""

from __future__ import annotations

import os

import pytest
from accelflow.core import links
from accelflow.core.errors import RepositoryError, UnsupportedFormatError


@pytest.fixture
def folder(tmp_path) -> str:
    root = tmp_path / "m"
    (root / "weights").mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"graph")
    (root / "weights" / "w.bin").write_bytes(b"weights")
    (tmp_path / "credentials").write_bytes(b"secret")
    return str(root)


def test_plain_files_are_listed_by_relative_path(folder):
    assert links.files_inside(folder) == [
        (os.path.join(folder, "model.onnx"), "model.onnx"),
        (os.path.join(folder, "weights", "w.bin"), "weights/w.bin"),
    ]


def test_a_link_to_a_file_inside_is_listed_under_its_name_with_its_target(folder):
    os.symlink(os.path.join("weights", "w.bin"), os.path.join(folder, "model.onnx.data"))
    listed = dict((rel, real) for real, rel in links.files_inside(folder))
    assert listed["model.onnx.data"] == os.path.realpath(os.path.join(folder, "weights", "w.bin"))


@pytest.mark.parametrize("where", ["model.onnx.data", "weights/more.bin"])
def test_a_link_out_of_the_folder_is_refused_naming_link_and_target(folder, tmp_path, where):
    link = os.path.join(folder, *where.split("/"))
    os.symlink(str(tmp_path / "credentials"), link)
    with pytest.raises(RepositoryError) as caught:
        links.files_inside(folder, RepositoryError)
    message = str(caught.value)
    assert f"{link} is a symbolic link to {tmp_path / 'credentials'}" in message
    assert "outside the model's folder" in message and "copy the real file" in message


def test_a_relative_link_climbing_out_is_refused(folder):
    os.symlink(os.path.join("..", "..", "credentials"), os.path.join(folder, "weights", "up.bin"))
    with pytest.raises(UnsupportedFormatError, match="up.bin is a symbolic link to .*credentials, outside"):
        links.files_inside(folder, UnsupportedFormatError)


def test_links_to_folders_are_refused_inside_or_out(folder, tmp_path):
    os.symlink(".", os.path.join(folder, "loop"))  # followed, this would never end
    with pytest.raises(RepositoryError, match="loop is a symbolic link to the folder"):
        links.files_inside(folder, RepositoryError)
    os.unlink(os.path.join(folder, "loop"))
    os.symlink(str(tmp_path), os.path.join(folder, "home"))
    with pytest.raises(RepositoryError, match=f"home is a symbolic link to {tmp_path}, outside"):
        links.files_inside(folder, RepositoryError)


def test_a_dangling_link_inside_is_refused(folder):
    os.symlink("gone.bin", os.path.join(folder, "w2.bin"))
    with pytest.raises(RepositoryError, match=r"w2.bin is a symbolic link to .*gone.bin, which is nothing"):
        links.files_inside(folder, RepositoryError)


def test_resolved_inside_refuses_a_path_climbing_out_without_any_link(folder, tmp_path):
    outside = os.path.join(folder, "..", "credentials")
    with pytest.raises(RepositoryError, match="resolves to .*credentials, outside the model's folder"):
        links.resolved_inside(folder, outside, RepositoryError)
    assert links.resolved_inside(folder, os.path.join(folder, "weights", "w.bin")) == os.path.realpath(
        os.path.join(folder, "weights", "w.bin"))


def test_a_folder_given_through_a_link_is_read_where_it_points(folder, tmp_path):
    """The folder named by the user may itself be a link: its files are inside its target."""
    os.symlink(folder, str(tmp_path / "latest"))
    assert [rel for _, rel in links.files_inside(str(tmp_path / "latest"))] == ["model.onnx", "weights/w.bin"]
