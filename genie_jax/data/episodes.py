"""The episode-source protocol every dataset implements, and the window index built on it.

An episode source is random-access over whole episodes but is only ever asked for windows:
`read_window(episode, start, length)` returns a dict with
  frames: uint8 [T, H, W, C]
  actions: int32 [T] (optional; the action taken *after* frame t, i.e. transition t -> t+1)
Windows never cross an episode boundary because the index below only enumerates starts with
`start + length <= episode_length`.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class EpisodeSource(Protocol):
    frame_shape: tuple[int, int, int]  # (H, W, C)
    has_actions: bool

    def episode_lengths(self) -> np.ndarray:
        """int64 [num_episodes]: number of frames in each episode."""

    def read_window(self, episode: int, start: int, length: int) -> dict[str, np.ndarray]:
        ...


class WindowIndex:
    """Maps a flat window id onto (episode, start) for all windows of `length` frames."""

    def __init__(self, episode_lengths: np.ndarray, length: int, stride: int = 1):
        lengths = np.asarray(episode_lengths, dtype=np.int64)
        if length < 1 or stride < 1:
            raise ValueError(f"window length ({length}) and stride ({stride}) must be >= 1")
        per_episode = np.where(lengths >= length, (lengths - length) // stride + 1, 0)
        if per_episode.sum() == 0:
            raise ValueError(
                f"no episode has {length} frames (longest has {lengths.max(initial=0)}); "
                "lower data.num_frames or use longer episodes")
        self.length = length
        self.stride = stride
        self._episodes = np.flatnonzero(per_episode)
        self._cum = np.cumsum(per_episode[self._episodes])

    def __len__(self) -> int:
        return int(self._cum[-1])

    def locate(self, window: int) -> tuple[int, int]:
        if not 0 <= window < len(self):
            raise IndexError(window)
        slot = int(np.searchsorted(self._cum, window, side="right"))
        before = int(self._cum[slot - 1]) if slot else 0
        return int(self._episodes[slot]), (window - before) * self.stride
