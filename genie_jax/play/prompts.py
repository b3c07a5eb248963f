"""Where a play session's prompt frames come from: a random held-out clip of the run's own data,
an uploaded PNG/JPEG (resized as `genie-jax data convert` resizes video: cover, centre-crop), or a
file given with `genie-jax play --prompt=...` (image, or .npy frames of exactly the model's size).

Every prompt is uint8 [T0, H, W, C] with (H, W, C) the tokenizer's image_size and channels.
"""
from __future__ import annotations

import io
import os

import numpy as np

from genie_jax.errors import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
# Refuse absurd uploads before decoding them (PIL's own bomb check is far larger).
MAX_UPLOAD_PIXELS = 16_000_000


def _to_channels(rgb_HW3: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3:
        return rgb_HW3
    if channels == 1:  # ITU-R 601 luma, as PIL's 'L' mode
        from PIL import Image
        return np.asarray(Image.fromarray(rgb_HW3).convert("L"))[..., None]
    raise UserError(f"cannot make a {channels}-channel prompt from an image (1 or 3 channels)")


def image_prompt(data: bytes, image_size, channels: int, what: str = "upload") -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [1, H, W, C] at the model's size (one-line UserError otherwise)."""
    from PIL import Image, UnidentifiedImageError

    from genie_jax.data.convert import ConvertOptions, resize_frames
    if not data:
        raise UserError(f"{what}: empty file; send a PNG or JPEG image")
    try:
        im = Image.open(io.BytesIO(data))
        if im.format not in ("PNG", "JPEG"):
            raise UserError(f"{what}: a {im.format} image; send a PNG or JPEG")
        w, h = im.size
        if w * h > MAX_UPLOAD_PIXELS:
            raise UserError(f"{what}: {w}x{h} pixels is too large (at most "
                            f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels)")
        rgb = np.asarray(im.convert("RGB"), np.uint8)
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{what}: not a readable PNG or JPEG image ({type(e).__name__})") from None
    H, W = (int(s) for s in image_size)
    frame = resize_frames(rgb[None], ConvertOptions(height=H, width=W, resize="crop"))[0]
    return _to_channels(frame, channels)[None]


def check_prompt(frames: np.ndarray, image_size, channels: int, what: str) -> np.ndarray:
    """uint8 [T0, H, W, C] of exactly the model's frame size, else a UserError naming `what`."""
    want = (*(int(s) for s in image_size), int(channels))
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or tuple(a.shape[1:]) != want or a.shape[0] < 1:
        raise UserError(f"{what}: prompt frames have shape {list(np.shape(frames))}; this run "
                        f"needs [T, {want[0]}, {want[1]}, {want[2]}] (model image_size, channels)")
    if a.dtype != np.uint8:
        raise UserError(f"{what}: prompt frames must be uint8; got {a.dtype}")
    return a


def file_prompt(path: str, image_size, channels: int) -> np.ndarray:
    """--prompt=FILE: a PNG/JPEG (resized) or a .npy of uint8 frames [T, H, W, C] (exact size)."""
    if not os.path.isfile(path):
        raise UserError(f"--prompt={path}: no such file (give a PNG/JPEG, a .npy of frames, "
                        "'random' or a held-out episode number)")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"--prompt={path}: not a readable .npy ({e})") from None
        return check_prompt(a, image_size, channels, f"--prompt={path}")
    if ext not in IMAGE_EXTS:
        raise UserError(f"--prompt={path}: expected {', '.join(IMAGE_EXTS)} or .npy")
    with open(path, "rb") as f:
        return image_prompt(f.read(), image_size, channels, what=f"--prompt={path}")


class HeldOutClips:
    """Random clips of `length` frames from a held-out split of the run's data (never 'train')."""

    def __init__(self, config, split: str, length: int):
        from genie_jax.evaluation import open_heldout
        self.source = open_heldout(config, split)
        self.split, self.length = split, int(length)
        lengths = np.asarray(self.source.episode_lengths())
        self.episodes = np.flatnonzero(lengths >= self.length)
        self.lengths = lengths
        if not len(self.episodes):
            raise UserError(f"no episode of split {split!r} has {self.length} frames for a prompt")

    def clip(self, rng: np.random.Generator, episode: int | None = None) -> tuple[np.ndarray, str]:
        """-> (uint8 [length, H, W, C], a description such as 'test episode 3, frames 10-11')."""
        if episode is None:
            episode = int(rng.choice(self.episodes))
        elif episode not in set(self.episodes.tolist()):
            raise UserError(f"episode {episode} is not an episode of split {self.split!r} with "
                            f"{self.length} frames (it has {len(self.lengths)} episodes)")
        start = int(rng.integers(0, int(self.lengths[episode]) - self.length + 1))
        w = self.source.read_window(episode, start, self.length)
        end = start + self.length - 1
        frames = f"frame {start}" if self.length == 1 else f"frames {start}-{end}"
        return np.asarray(w["frames"], np.uint8), f"{self.split} episode {episode}, {frames}"


def open_clips(config, splits, length: int) -> HeldOutClips:
    """HeldOutClips of the first of `splits` that opens and has an episode long enough (a small
    converted dataset may have an empty 'test' split); else a UserError naming each reason."""
    reasons = []
    for split in splits:
        try:
            return HeldOutClips(config, split, length)
        except UserError as e:
            reasons.append(str(e))
    raise UserError("no held-out prompts: " + "; ".join(reasons))
