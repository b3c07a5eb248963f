"""Prompt frames from uploads and files: resized like converted video, bad input is one line."""
import io

import numpy as np
import pytest
from PIL import Image

from genie_jax.errors import UserError
from genie_jax.play.prompts import check_prompt, file_prompt, image_prompt


def _encode(a, fmt):
    b = io.BytesIO()
    Image.fromarray(a).save(b, format=fmt)
    return b.getvalue()


def test_image_prompt_covers_and_centre_crops():
    a = np.zeros((30, 60, 3), np.uint8)
    a[:, 15:45] = 255                   # a white band in the centre half of a 2:1 image
    out = image_prompt(_encode(a, "PNG"), (16, 16), 3)
    assert out.shape == (1, 16, 16, 3) and out.dtype == np.uint8
    assert out.mean() > 200             # cover + centre crop keeps only the band
    grey = image_prompt(_encode(a, "JPEG"), (8, 8), 1)
    assert grey.shape == (1, 8, 8, 1)


@pytest.mark.parametrize("data,match", [
    (b"", "empty"), (b"hello", "not a readable PNG or JPEG"),
    (_encode(np.zeros((4, 4, 3), np.uint8), "GIF"), "a GIF image")])
def test_bad_uploads_are_one_line_errors(data, match):
    with pytest.raises(UserError, match=match):
        image_prompt(data, (16, 16), 3, what="upload")


def test_prompt_files(tmp_path):
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.zeros((2, 16, 16, 3), np.uint8))
    np.save(bad, np.zeros((2, 32, 32, 3), np.uint8))
    assert file_prompt(str(good), (16, 16), 3).shape == (2, 16, 16, 3)
    with pytest.raises(UserError, match=r"bad.npy: prompt frames have shape \[2, 32, 32, 3\]"):
        file_prompt(str(bad), (16, 16), 3)
    with pytest.raises(UserError, match="no such file"):
        file_prompt(str(tmp_path / "nope.png"), (16, 16), 3)
    with pytest.raises(UserError, match="uint8"):
        check_prompt(np.zeros((1, 16, 16, 3), np.float32), (16, 16), 3, "x")
