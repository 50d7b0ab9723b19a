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


def test_a_picture_too_large_to_decode_is_refused_from_its_header(tmp_path):
    # A few dozen bytes that claim 9000 x 9000 (or 13000 x 13000) pixels: Pillow would decode all
    # of them to reach the recipe behind them (or raise DecompressionBombError, no OSError).
    from das_ag.errors import ConfigError
    from das_ag.pictures import load_picture, picture_problems

    from .conftest import png_claiming

    for side in (9000, 13000):  # das-ag's own check from the header; past twice it, Pillow's
        bomb = png_claiming(side, side)
        assert len(bomb) < 100
        with pytest.raises(DasAgError, match="the file is too large.*das-ag reads pictures of at most 64 megapixels"):
            read_recipe(bomb)
        path = tmp_path / f"bomb{side}.png"
        path.write_bytes(bomb)
        with pytest.raises(DasAgError, match="is too large"):
            read_recipe(path)
        with pytest.raises(ConfigError, match=f"init image .*bomb{side}.png is too large"):
            load_picture(str(path), 64, 64)
        assert picture_problems(str(path), "", "image prompt")[0].endswith("at most 64 megapixels")
    assert Image.MAX_IMAGE_PIXELS == 64 * 2**20  # Pillow's own fence, for any other path



def test_files_that_never_end_are_not_read(tmp_path):
    # /dev/zero as a style list or a start picture's path would be read for ever (and fill memory).
    from das_ag.errors import ConfigError
    from das_ag.styles import load_labels
    from das_ag.weights import file_sha256

    assert file_sha256("/dev/zero") is None
    with pytest.raises(ConfigError, match="not a regular file"):
        load_labels("/dev/zero")
    big = tmp_path / "styles.txt"
    big.write_bytes(b"x\n" * 2**20)
    with pytest.raises(ConfigError, match="over 1 MB"):
        load_labels(str(big))


def test_an_svg_with_entities_is_refused_before_they_expand():
    laughs = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
              b'<svg xmlns="http://www.w3.org/2000/svg"><metadata id="das-ag-recipe">&b;</metadata></svg>')
    with pytest.raises(DasAgError, match="declares a DTD or entities"):
        read_recipe(laughs)


def test_a_device_named_as_an_svg_is_refused_not_read_for_ever():
    # /dev/zero's size reads as 0, under any cap, and reading it never ends.
    from das_ag.svg import read_svg_recipe

    with pytest.raises(DasAgError, match="not a regular file"):
        read_svg_recipe("/dev/zero")
