"""Tiny datasets whose pixels say where they come from (episode id, frame index)."""
import os

import numpy as np

from genie_jax.data import shards


def tagged_episode(episode: int, length: int, hw: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose pixel [0,0] holds (episode, t % 256, t // 256); actions = (episode*7+t) % 5."""
    rng = np.random.default_rng(episode)
    frames = rng.integers(0, 256, (length, hw, hw, 3), dtype=np.uint8)
    t = np.arange(length)
    frames[:, 0, 0, 0] = episode
    frames[:, 0, 0, 1] = t % 256
    frames[:, 0, 0, 2] = t // 256
    return frames, ((episode * 7 + t) % 5).astype(np.int32)


def window_ids(frames: np.ndarray) -> list[tuple[int, int]]:
    """(episode, start) of each window in a batch [B, T, H, W, C] of tagged frames."""
    f = frames[:, 0, 0, 0].astype(np.int64)
    return [(int(e), int(lo) + 256 * int(hi)) for e, lo, hi in f]


def write_tagged(out_dir: str, lengths: list[int], hw: int = 8, record_frames: int = 4,
                 per_unit: int = 3, fractions="1,0,0") -> dict:
    fr = shards.parse_fractions(fractions)
    staging = os.path.join(out_dir, shards.STAGING_DIR)
    data = {}
    for u0 in range(0, len(lengths), per_unit):
        w = shards.UnitWriter(staging, f"u{u0}", (hw, hw, 3), fractions=fr,
                              record_frames=record_frames)
        for e in range(u0, min(len(lengths), u0 + per_unit)):
            f, a = tagged_episode(e, lengths[e], hw)
            w.begin_episode(dict(source=f"tagged{e}", seed=e, fps=10.0))
            for s in range(0, len(f), 5):  # uneven pieces exercise the record buffering
                w.add(f[s:s + 5], a[s:s + 5])
            w.end_episode()
            data[f"u{u0}/{e - u0}"] = (f, a)
        w.commit()
    shards.finalize(out_dir)
    return data
