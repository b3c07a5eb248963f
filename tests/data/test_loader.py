import numpy as np
import pytest

from genie_jax.data import shards
from genie_jax.data.loader import LoaderOptions, make_iterator
from .helpers import window_ids, write_tagged

LENGTHS = [7, 12, 5, 20, 9, 3, 16]  # 3 < num_frames: that episode yields no window


@pytest.fixture
def source(tmp_path):
    write_tagged(str(tmp_path), LENGTHS, record_frames=4)
    return shards.open_source(str(tmp_path), "train")


def _ep_of(src):
    """tag (original episode number) -> its length, via the metadata seed."""
    return {src.metadata(e)["seed"]: int(n) for e, n in enumerate(src.episode_lengths())}


def test_windows_never_cross_episode_boundaries(source):
    lengths = _ep_of(source)
    it = make_iterator(source, LoaderOptions(num_frames=5, local_batch=4, seed=3, num_epochs=2))
    seen = 0
    for batch in it:
        f = batch["frames"]
        assert f.shape[1:] == (5, 8, 8, 3) and batch["actions"].shape == (4, 5)
        for b, (ep, start) in enumerate(window_ids(f)):
            assert start + 5 <= lengths[ep]
            # every frame of the window comes from the same episode, consecutive in time
            np.testing.assert_array_equal(f[b, :, 0, 0, 0], ep)
            t = f[b, :, 0, 0, 1].astype(int) + 256 * f[b, :, 0, 0, 2].astype(int)
            np.testing.assert_array_equal(t, np.arange(start, start + 5))
            np.testing.assert_array_equal(batch["actions"][b], (ep * 7 + t) % 5)
            seen += 1
    total = sum(max(0, n - 5 + 1) for n in LENGTHS)
    assert seen == (2 * total) // 4 * 4


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_same_seed_same_batches_other_seed_differs(source):
    opts = LoaderOptions(num_frames=4, local_batch=3, seed=11)
    a, b = _take(make_iterator(source, opts), 6), _take(make_iterator(source, opts), 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["frames"], y["frames"])
        np.testing.assert_array_equal(x["actions"], y["actions"])
    c = _take(make_iterator(source, LoaderOptions(num_frames=4, local_batch=3, seed=12)), 6)
    assert any(window_ids(x["frames"]) != window_ids(z["frames"]) for x, z in zip(a, c))


def test_restored_iterator_continues_identically(source):
    opts = LoaderOptions(num_frames=4, local_batch=3, seed=5)
    it = make_iterator(source, opts)
    _take(it, 7)  # 51 windows = 17 batches per epoch: the 20 compared below cross an epoch
    state = it.get_state()
    expected = _take(it, 20)
    fresh = make_iterator(source, opts)
    fresh.set_state(state)
    got = _take(fresh, 20)
    for x, y in zip(expected, got):
        np.testing.assert_array_equal(x["frames"], y["frames"])


def test_two_processes_cover_the_data_without_overlap(source):
    def ids(index, count, batch):
        it = make_iterator(source, LoaderOptions(num_frames=4, local_batch=batch, seed=2,
                                                 num_epochs=1, process_index=index,
                                                 process_count=count))
        return [w for b in it for w in window_ids(b["frames"])]

    everything = ids(0, 1, 1)
    total = sum(max(0, n - 4 + 1) for n in LENGTHS)
    assert len(everything) == len(set(everything)) == total
    p0, p1 = ids(0, 2, 2), ids(1, 2, 2)
    assert p0 and p1 and not set(p0) & set(p1)
    assert len(p0) == len(set(p0)) and len(p1) == len(set(p1))
    # Together: every window except at most the last incomplete global batch (2 hosts x 2).
    assert set(p0) | set(p1) <= set(everything)
    assert len(set(everything) - set(p0) - set(p1)) < 4
