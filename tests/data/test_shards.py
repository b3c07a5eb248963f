import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from genie_jax.data import shards
from .helpers import tagged_episode, write_tagged

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_windows_read_back_exactly(tmp_path):
    lengths = [5, 13, 4, 30, 17]
    data = write_tagged(str(tmp_path), lengths, record_frames=4)
    src = shards.open_source(str(tmp_path), "train")
    assert src.frame_shape == (8, 8, 3) and src.has_actions
    assert sorted(src.episode_lengths().tolist()) == sorted(lengths)
    for e in range(len(src)):
        frames, actions = data[src.metadata(e)["key"]]
        n = len(frames)
        for start in range(n):
            for length in (1, 3, 4, 9):
                if start + length <= n:
                    w = src.read_window(e, start, length)
                    np.testing.assert_array_equal(w["frames"], frames[start:start + length])
                    np.testing.assert_array_equal(w["actions"], actions[start:start + length])
        with pytest.raises(IndexError):
            src.read_window(e, n - 1, 2)


def test_readable_as_plain_tfds_data_source(tmp_path):
    data = write_tagged(str(tmp_path), [10, 7], record_frames=4)
    ds = tfds.builder_from_directory(str(tmp_path)).as_data_source("train")
    assert len(ds) == 3 + 2  # ceil(10/4) + ceil(7/4) records
    for i in range(len(ds)):
        r = ds[i]
        key = r["episode_key"].decode() if isinstance(r["episode_key"], bytes) else r["episode_key"]
        frames, actions = data[key]
        o = int(r["frame_offset"])
        np.testing.assert_array_equal(r["frames"], frames[o:o + len(r["frames"])])
        np.testing.assert_array_equal(r["actions"], actions[o:o + len(r["actions"])])


def test_splits_are_disjoint_and_stable(tmp_path):
    write_tagged(str(tmp_path), [6] * 40, fractions="0.5,0.25,0.25", per_unit=8)
    keys = {}
    for split in shards.SPLITS:
        src = shards.open_source(str(tmp_path), split)
        keys[split] = {src.metadata(e)["key"] for e in range(len(src))}
        assert keys[split], split
    assert sum(map(len, keys.values())) == 40
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"])
    fr = shards.parse_fractions("0.5,0.25,0.25")
    for split, ks in keys.items():  # the split is a pure function of the key
        assert all(shards.split_of(k, fr, 0) == split for k in ks)


def test_open_source_errors_name_the_directory(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(shards.DatasetError, match="nope"):
        shards.open_source(missing, "train")
    (tmp_path / "plain").mkdir()
    with pytest.raises(shards.DatasetError, match="plain.*not a genie_jax dataset"):
        shards.open_source(str(tmp_path / "plain"), "train")
    write_tagged(str(tmp_path / "d"), [5, 5], fractions="1,0,0")
    with pytest.raises(shards.DatasetError, match="no episodes in split 'val'"):
        shards.open_source(str(tmp_path / "d"), "val")


def test_aborted_unit_leaves_nothing_visible(tmp_path):
    staging = str(tmp_path / shards.STAGING_DIR)
    w = shards.UnitWriter(staging, "u", (8, 8, 3), fractions=shards.parse_fractions("1,0,0"),
                          record_frames=2)
    w.begin_episode({})
    w.add(tagged_episode(0, 9)[0])
    w.abort()
    assert os.listdir(staging) == []
    assert shards.unit_done(staging, "u") is None


def test_short_episodes_dropped_and_no_actions_marked(tmp_path):
    staging = str(tmp_path / shards.STAGING_DIR)
    w = shards.UnitWriter(staging, "u", (8, 8, 3), fractions=shards.parse_fractions("1,0,0"),
                          record_frames=2, min_frames=5)
    for n in (3, 7):
        w.begin_episode({})
        w.add(tagged_episode(n, n)[0])
        w.end_episode()
    res = w.commit()
    assert (res.episodes, res.frames) == (1, 7)
    manifest = json.load(open(os.path.join(staging, "u.json")))
    assert manifest["dropped_short"] == 1
    shards.finalize(str(tmp_path))
    src = shards.open_source(str(tmp_path), "train")
    assert not src.has_actions
    assert (src.read_window(0, 0, 7)["actions"] == -1).all()


def test_chunk_bytes_do_not_depend_on_the_process_hash_seed():
    code = ("import hashlib, numpy as np; from genie_jax.data.shards import serialize_chunk; "
            "print(hashlib.sha256(serialize_chunk(np.arange(96, dtype=np.uint8).reshape(2, 4, 4, 3),"
            " np.array([1, 2]), 'u/0', 16)).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True, cwd=ROOT,
                              env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout
               for seed in (1, 2, 3)}
    assert len(digests) == 1, digests
