"""Grain pipeline from an episode source to per-host batches of frame windows.

Order of operations (all index-based, so the iterator state is just a position and the whole
pipeline is deterministic for a seed):
  windows -> shuffle(seed, reshuffled every epoch) -> repeat -> batch(local) -> [process::count]
Host p therefore reads local batches p, p + P, p + 2P, ... of one global sequence: the union of
the hosts' batches at step s is exactly the global batch a single host would read, which makes a
multi-host run numerically the same as a one-host run of the same global batch.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from genie_jax.data.episodes import EpisodeSource, WindowIndex


class WindowDataSource:
    """Random-access view of every `length`-frame window of an episode source."""

    def __init__(self, source: EpisodeSource, length: int, stride: int = 1):
        self.source = source
        self.index = WindowIndex(source.episode_lengths(), length, stride)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, window: int) -> dict[str, np.ndarray]:
        episode, start = self.index.locate(int(window))
        return self.source.read_window(episode, start, self.index.length)


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
    num_frames: int
    local_batch: int
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None  # None repeats forever
    window_stride: int = 1
    process_index: int = 0
    process_count: int = 1
    worker_count: int = 0
    read_threads: int = 1
    prefetch: int = 2


def window_source(source, length: int, stride: int = 1):
    """Every window of an episode source, or a source that already holds windows (a token
    cache, data/token_cache.py: its window w is window w of the episode source it was made
    from, so one seed gives the same batches from either)."""
    if hasattr(source, "windows"):
        return source.windows(length, stride)
    return WindowDataSource(source, length, stride)


def build_dataset(source: EpisodeSource, opts: LoaderOptions) -> grain.IterDataset:
    ds = grain.MapDataset.source(window_source(source, opts.num_frames, opts.window_stride))
    if opts.shuffle:
        ds = ds.shuffle(seed=opts.seed)
    ds = ds.repeat(opts.num_epochs)
    ds = ds.batch(opts.local_batch, drop_remainder=True)
    if opts.process_count > 1:
        ds = ds[opts.process_index::opts.process_count]
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=opts.read_threads,
                                              prefetch_buffer_size=opts.prefetch))
    if opts.worker_count > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=opts.worker_count))
    return it


def make_iterator(source: EpisodeSource, opts: LoaderOptions) -> grain.DatasetIterator:
    """A checkpointable iterator (save/restore it with grain.checkpoint.CheckpointSave/Restore)."""
    return iter(build_dataset(source, opts))
