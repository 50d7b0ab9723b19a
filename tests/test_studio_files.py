"""Where the studio may write, and the modes of the files das-ag writes."""

from __future__ import annotations

import os
import stat

import pytest

from das_ag.errors import DasAgError
from das_ag.png import write_atomic
from das_ag.studio.files import output_folder, output_root


def test_the_root_comes_from_the_environment(monkeypatch, tmp_path):
    assert output_root().name == "outputs"
    monkeypatch.setenv("DAS_AG_OUTPUT_DIR", str(tmp_path / "gallery"))
    assert output_root() == tmp_path / "gallery"


def test_subfolders_inside_the_root_are_allowed(tmp_path):
    root = tmp_path / "out"
    assert output_folder("", root) == root
    assert output_folder(" . ", root) == root
    assert output_folder("koi/night", root) == root / "koi" / "night"


@pytest.mark.parametrize("choice", ["/etc", "/tmp/x", "..", "../elsewhere", "a/../../b", "C:\\temp"])
def test_nothing_outside_the_root_is_allowed(tmp_path, choice):
    with pytest.raises(DasAgError, match="inside|climbs out|leads outside"):
        output_folder(choice, tmp_path / "out")


def test_a_link_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(DasAgError, match="leads outside"):
        output_folder("escape/x", root)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_atomic(tmp_path / "a.png", b"data")
        replaced = write_atomic(tmp_path / "a.png", b"more", overwrite=True)
    finally:
        os.umask(old)
    for p in (path, replaced):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
    assert replaced.read_bytes() == b"more"
    assert not list(tmp_path.glob(".*partial"))


def test_uploads_of_each_kind_keep_their_suffixes_only(tmp_path):
    from das_ag.studio.files import save_upload

    kept = save_upload("moods.txt", b"calm\nstormy\n", tmp_path, kind="style list")
    assert kept.parent == tmp_path / "uploads" and kept.read_bytes() == b"calm\nstormy\n"
    assert save_upload("again.txt", b"calm\nstormy\n", tmp_path, kind="style list") == kept  # stored once
    with pytest.raises(DasAgError, match="a centroid file must be one of .npz"):
        save_upload("styles.txt", b"x", tmp_path, kind="centroid file")
    with pytest.raises(DasAgError, match="not a readable picture"):
        save_upload("photo.png", b"not a picture", tmp_path)
