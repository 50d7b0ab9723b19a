import json

import pytest
from PIL import Image

from das_ag.errors import DasAgError
from das_ag.png import OutputExistsError, RECIPE_KEY, read_recipe, save_png

RECIPE = {"format": 1, "config": {"prompts": [{"text": "ünïcode ☀", "weight": 1.0}]}}


def image(colour=(10, 200, 30)):
    return Image.new("RGB", (8, 8), colour)


def test_recipe_round_trip(tmp_path):
    path = save_png(image(), tmp_path / "a.png", RECIPE)
    assert read_recipe(path) == RECIPE
    with Image.open(path) as img:
        assert json.loads(img.text[RECIPE_KEY]) == RECIPE
        assert img.getpixel((0, 0)) == (10, 200, 30)


def test_existing_files_are_kept_unless_overwrite(tmp_path):
    path = save_png(image(), tmp_path / "a.png", RECIPE)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        save_png(image((0, 0, 0)), path, RECIPE)
    assert path.read_bytes() == before
    save_png(image((0, 0, 0)), path, RECIPE, overwrite=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no partial files left behind


def test_folders_are_created_and_the_suffix_checked(tmp_path):
    assert save_png(image(), tmp_path / "new" / "dir" / "b.png", RECIPE).is_file()
    with pytest.raises(DasAgError, match=".png"):
        save_png(image(), tmp_path / "b.jpg", RECIPE)


def test_files_without_a_recipe(tmp_path):
    plain = tmp_path / "plain.png"
    image().save(plain)
    with pytest.raises(DasAgError, match="no das-ag recipe"):
        read_recipe(plain)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(DasAgError, match="not a readable PNG"):
        read_recipe(text)
    with pytest.raises(DasAgError, match="does not exist"):
        read_recipe(tmp_path / "missing.png")
