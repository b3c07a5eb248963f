"""The genie_jax on-disk episode dataset: ArrayRecord shards forming a TFDS dataset directory.

Layout of a dataset directory DIR (everything written by `genie-jax data ...`):

  DIR/dataset_info.json, DIR/features.json          TFDS metadata (written last, on finalize)
  DIR/genie_video-{split}.array_record-0000X-of-0000N  one shard per (unit, split)
  DIR/genie_episodes.json                          episode index + per-episode metadata
  DIR/.staging/                                    resumable work area (see below)

Each ArrayRecord record is one *chunk* of one episode: at most `record_frames` consecutive frames
(16 by default; the last chunk of an episode may be shorter), serialized as a tf.train.Example with
the TFDS features

  frames        uint8 [n, H, W, C]  (Tensor, Encoding.BYTES: raw bytes, no image codec)
  actions       int32 [n]           action taken *after* frame t (transition t -> t+1); -1 = unknown
  episode_key   text                unique, stable episode id "<unit>/<episode number in unit>"
  frame_offset  int64               index in the episode of the chunk's first frame

The chunks of an episode are consecutive records of one shard, so a window of L frames starting
at frame s reads only records s // R .. (s + L - 1) // R (R = record_frames), never the whole
episode. `genie_episodes.json` maps each split's episodes (numbered 0..E-1 in shard order) to
(shard, first record, number of records, number of frames) and carries the metadata of every
episode: source (file path or generator), fps, height/width, seed, has_actions.

The directory reads without TensorFlow as a plain TFDS dataset:
  tfds.builder_from_directory(DIR).as_data_source("train")[i]  ->  one chunk dict
and as an episode source for the window loader with `open_source(DIR, "train")`.

Splits are assigned per episode (or per source with split_by="source") from a hash of the
episode key and the split seed, so the assignment of an episode never changes when more inputs
are added later, and a unit can be written before the others are known. Small datasets can
therefore leave a split empty; the writer reports it.

Writing is two-phase. Workers write *units* (one input video / array / image folder, or one block
of generated episodes) into DIR/.staging: `<unit>.<split>.array_record` shards plus a
`<unit>.json` manifest, each written under a temporary name and renamed, the manifest last; a unit
with a manifest is finished and is skipped by a re-run (genie_jax/data/staging.py runs the units
and holds the one policy for removing temporaries, stale and failed units). `finalize` then hard-links every staged
shard into the TFDS naming scheme and writes the index and TFDS metadata; no record is copied.
Deleting .staging after conversion is safe for reading (the shards are hard links), but a later
re-run would then convert everything again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any

import numpy as np

from genie_jax.errors import UserError
from genie_jax.media import write_text

DATASET_NAME = "genie_video"
VERSION = "1.0.0"
INDEX_FILE = "genie_episodes.json"
STAGING_DIR = ".staging"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
DEFAULT_RECORD_FRAMES = 16
# group_size:1 keeps every record individually addressable (one pread per record).
WRITER_OPTIONS = {"none": "group_size:1,uncompressed", "zstd": "group_size:1,zstd:1"}


class DatasetError(UserError, RuntimeError):
    """A dataset directory that is missing, incomplete or of another format (names the path)."""


def features(height: int, width: int, channels: int = 3):
    import tensorflow_datasets as tfds
    return tfds.features.FeaturesDict({
        "frames": tfds.features.Tensor(shape=(None, height, width, channels), dtype=np.uint8,
                                       encoding=tfds.features.Encoding.BYTES),
        "actions": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "episode_key": tfds.features.Text(),
        "frame_offset": np.int64,
    })


def _example_pb2():
    from tensorflow_datasets.proto import tf_example_pb2
    return tf_example_pb2


def serialize_chunk(frames: np.ndarray, actions: np.ndarray, episode_key: str, offset: int) -> bytes:
    """The Example features(...).serialize_example builds, built directly (no TFDS import).

    Serialized with a deterministic map order: otherwise the order of the four features follows
    the process's string hashing, and one chunk gives different bytes in different runs."""
    pb = _example_pb2()
    ex = pb.Example()
    f = ex.features.feature
    f["frames"].bytes_list.value.append(np.ascontiguousarray(frames, np.uint8).tobytes())
    f["actions"].int64_list.value.extend(np.asarray(actions, np.int64).tolist())
    f["episode_key"].bytes_list.value.append(episode_key.encode())
    f["frame_offset"].int64_list.value.append(int(offset))
    return ex.SerializeToString(deterministic=True)


def split_of(key: str, fractions: dict[str, float], seed: int) -> str:
    """Deterministic split for a key: stable under adding other keys."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(h[:8], "little") / 2.0**64
    acc = 0.0
    for name in ("test", "val"):
        acc += fractions.get(name, 0.0)
        if u < acc:
            return name
    return "train"


def parse_fractions(text: str) -> dict[str, float]:
    """'0.9,0.05,0.05' (train,val,test) or 'train=0.9,val=0.1'."""
    parts = [p for p in text.split(",") if p.strip()]
    out: dict[str, float] = {}
    for i, p in enumerate(parts):
        if "=" in p:
            k, v = p.split("=", 1)
            out[k.strip()] = float(v)
        else:
            if i >= len(SPLITS):
                raise ValueError(f"too many split fractions in {text!r}")
            out[SPLITS[i]] = float(p)
    if set(out) - set(SPLITS) or any(v < 0 for v in out.values()):
        raise ValueError(f"split fractions must be train/val/test >= 0, got {text!r}")
    total = sum(out.values())
    if total <= 0:
        raise ValueError(f"split fractions sum to 0: {text!r}")
    return {k: out.get(k, 0.0) / total for k in SPLITS}


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class UnitResult:
    unit: str
    episodes: int = 0
    frames: int = 0
    bytes: int = 0
    skipped: bool = False  # already finished by an earlier run


def unit_done(staging: str, unit: str) -> dict | None:
    path = os.path.join(staging, unit + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class UnitWriter:
    """Streams the episodes of one unit into per-split staging shards.

    Use: begin_episode(meta); add(frames, actions) any number of times; end_episode(); ...;
    commit(). Nothing is visible under its final name until commit(); abort() removes the
    temporaries. Episodes shorter than `min_frames` are dropped.
    """

    def __init__(self, staging: str, unit: str, frame_shape: tuple[int, int, int], *,
                 fractions: dict[str, float], split_seed: int = 0, split_by: str = "episode",
                 record_frames: int = DEFAULT_RECORD_FRAMES, compression: str = "none",
                 min_frames: int = 1, unit_meta: dict | None = None):
        if split_by not in ("episode", "source"):
            raise ValueError(f"split_by must be 'episode' or 'source', got {split_by!r}")
        os.makedirs(staging, exist_ok=True)
        self.staging, self.unit, self.frame_shape = staging, unit, tuple(frame_shape)
        self.fractions, self.split_seed, self.split_by = fractions, split_seed, split_by
        self.record_frames, self.min_frames = record_frames, max(1, min_frames)
        self.options = WRITER_OPTIONS[compression]
        self.unit_meta = unit_meta or {}
        self._tag = uuid.uuid4().hex[:8]
        self._writers: dict[str, Any] = {}
        self._counts: dict[str, int] = {}
        self.episodes: list[dict] = []
        self._ep: dict | None = None
        self.dropped_short = 0

    def _tmp_path(self, split: str) -> str:
        return os.path.join(self.staging, f"{self.unit}.{split}.array_record.tmp-{self._tag}")

    def _writer(self, split: str):
        if split not in self._writers:
            from array_record.python import array_record_module
            self._writers[split] = array_record_module.ArrayRecordWriter(
                self._tmp_path(split), self.options)
            self._counts[split] = 0
        return self._writers[split]

    def begin_episode(self, meta: dict) -> None:
        assert self._ep is None, "end_episode() first"
        number = len(self.episodes) + self.dropped_short
        key = f"{self.unit}/{number}"
        split_key = self.unit if self.split_by == "source" else key
        self._ep = dict(key=key, split=split_of(split_key, self.fractions, self.split_seed),
                        meta=dict(meta), frames=[], actions=[], n_buf=0, num_frames=0,
                        first_record=None, num_records=0, has_actions=True)

    def add(self, frames: np.ndarray, actions: np.ndarray | None = None) -> None:
        ep = self._ep
        assert ep is not None, "begin_episode() first"
        frames = np.asarray(frames)
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, {', '.join(map(str, self.frame_shape))}], "
                             f"got {frames.dtype} {list(frames.shape)}")
        if actions is None:
            ep["has_actions"] = False
            actions = np.full(len(frames), -1, np.int32)
        actions = np.asarray(actions, np.int32)
        if actions.shape != (len(frames),):
            raise ValueError(f"actions must be int32 [{len(frames)}], got {list(actions.shape)}")
        ep["frames"].append(frames)
        ep["actions"].append(actions)
        ep["n_buf"] += len(frames)
        # Nothing is written before the episode reaches min_frames, so a short one can be dropped.
        while (ep["n_buf"] >= self.record_frames
               and ep["num_frames"] + ep["n_buf"] >= self.min_frames):
            self._flush(self.record_frames)

    def _flush(self, n: int) -> None:
        ep = self._ep
        frames = np.concatenate(ep["frames"]) if len(ep["frames"]) > 1 else ep["frames"][0]
        actions = np.concatenate(ep["actions"]) if len(ep["actions"]) > 1 else ep["actions"][0]
        w = self._writer(ep["split"])
        if ep["first_record"] is None:
            ep["first_record"] = self._counts[ep["split"]]
        w.write(serialize_chunk(frames[:n], actions[:n], ep["key"], ep["num_frames"]))
        self._counts[ep["split"]] += 1
        ep["num_records"] += 1
        ep["num_frames"] += n
        ep["frames"], ep["actions"] = [frames[n:]], [actions[n:]]
        ep["n_buf"] = len(frames) - n

    def end_episode(self) -> None:
        ep = self._ep
        assert ep is not None
        total = ep["num_frames"] + ep["n_buf"]
        if total < self.min_frames:  # nothing of it was written (see add)
            self.dropped_short += 1
            self._ep = None
            return
        if ep["n_buf"]:
            self._flush(ep["n_buf"])
        m = ep["meta"]
        m.update(key=ep["key"], split=ep["split"], num_frames=ep["num_frames"],
                 first_record=ep["first_record"], num_records=ep["num_records"],
                 has_actions=ep["has_actions"])
        self.episodes.append(m)
        self._ep = None

    def abort(self) -> None:
        for split, w in self._writers.items():
            try:
                w.close()
            except Exception:
                pass
            try:
                os.remove(self._tmp_path(split))
            except OSError:
                pass
        self._writers.clear()

    def commit(self) -> UnitResult:
        assert self._ep is None, "end_episode() first"
        shards = {}
        nbytes = 0
        for split, w in self._writers.items():
            w.close()
            final = os.path.join(self.staging, f"{self.unit}.{split}.array_record")
            os.replace(self._tmp_path(split), final)
            shards[split] = dict(file=os.path.basename(final), num_records=self._counts[split])
            nbytes += os.path.getsize(final)
        self._writers.clear()
        manifest = dict(format_version=FORMAT_VERSION, unit=self.unit, frame_shape=self.frame_shape,
                        record_frames=self.record_frames, shards=shards, episodes=self.episodes,
                        dropped_short=self.dropped_short, bytes=nbytes, **self.unit_meta)
        write_text(os.path.join(self.staging, self.unit + ".json"),
                           json.dumps(manifest, indent=1))
        return UnitResult(self.unit, len(self.episodes),
                          sum(e["num_frames"] for e in self.episodes), nbytes)


def check_options(out_dir: str, options: dict) -> None:
    """Refuse to mix units written with different conversion options in one dataset."""
    staging = os.path.join(out_dir, STAGING_DIR)
    os.makedirs(staging, exist_ok=True)
    path = os.path.join(staging, "options.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != json.loads(json.dumps(options)):
            diff = {k: (old.get(k), options.get(k)) for k in set(old) | set(options)
                    if old.get(k) != options.get(k)}
            raise DatasetError(
                f"{out_dir} was written with different options {diff} (old, new); use another "
                "--out or delete the directory")
    else:
        write_text(path, json.dumps(options, indent=1, sort_keys=True))


def finalize(out_dir: str, description: str = "") -> dict[str, dict]:
    """Publish every finished staged unit as the TFDS dataset in out_dir. Returns split stats."""
    from tensorflow_datasets.core import dataset_info, file_adapters, naming, utils
    from tensorflow_datasets.core import splits as split_lib

    staging = os.path.join(out_dir, STAGING_DIR)
    manifests = []
    for name in sorted(os.listdir(staging)) if os.path.isdir(staging) else []:
        if name.endswith(".json") and name != "options.json" and ".tmp-" not in name:
            with open(os.path.join(staging, name)) as f:
                manifests.append(json.load(f))
    if not manifests:
        raise DatasetError(f"nothing to finalize in {out_dir}: no finished unit in {staging}")
    shapes = {tuple(m["frame_shape"]) for m in manifests}
    rfs = {m["record_frames"] for m in manifests}
    if len(shapes) != 1 or len(rfs) != 1:
        raise DatasetError(f"{out_dir}: staged units disagree on frame shape {shapes} or "
                           f"record_frames {rfs}")
    (H, W, C), = shapes
    record_frames, = rfs

    # Unpublish the previous version first: without dataset_info.json the directory is not a
    # dataset, so a reader never sees old metadata over new shards.
    for name in ("dataset_info.json", "features.json", INDEX_FILE):
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    for name in os.listdir(out_dir):
        if name.startswith(f"{DATASET_NAME}-") and ".array_record-" in name:
            os.remove(os.path.join(out_dir, name))

    split_infos, index, stats = [], {}, {}
    for split in SPLITS:
        shards = [(m, m["shards"][split]) for m in manifests if split in m["shards"]]
        if not shards:
            stats[split] = dict(episodes=0, frames=0, shards=0)
            continue
        tmpl = naming.ShardedFileTemplate(data_dir=out_dir, dataset_name=DATASET_NAME,
                                          split=split, filetype_suffix="array_record")
        episodes, lengths, nbytes = [], [], 0
        for i, (m, sh) in enumerate(shards):
            dst = os.fspath(tmpl.sharded_filepath(shard_index=i, num_shards=len(shards)))
            src = os.path.join(staging, sh["file"])
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            lengths.append(sh["num_records"])
            nbytes += os.path.getsize(dst)
            for e in m["episodes"]:
                if e["split"] == split:
                    episodes.append(dict(e, shard=i))
        split_infos.append(split_lib.SplitInfo(name=split, shard_lengths=lengths,
                                               num_bytes=nbytes, filename_template=tmpl))
        index[split] = episodes
        stats[split] = dict(episodes=len(episodes), frames=sum(e["num_frames"] for e in episodes),
                            shards=len(shards), bytes=nbytes)

    write_text(os.path.join(out_dir, INDEX_FILE), json.dumps(dict(
        format_version=FORMAT_VERSION, frame_shape=[H, W, C], record_frames=record_frames,
        splits=index)))
    ident = dataset_info.DatasetIdentity(name=DATASET_NAME, version=utils.Version(VERSION),
                                         data_dir=out_dir, module_name="")
    info = dataset_info.DatasetInfo(
        builder=ident, features=features(H, W, C),
        description=description or "genie_jax video episodes (see genie_jax/data/shards.py)")
    info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
    info.set_splits(split_lib.SplitDict(split_infos))
    # write_to_directory writes features.json then dataset_info.json; the latter makes it live.
    tmpdir = tempfile.mkdtemp(dir=out_dir, prefix=".meta-")
    try:
        info.write_to_directory(tmpdir)
        names = sorted(os.listdir(tmpdir), key=lambda n: n == "dataset_info.json")
        for name in names:
            os.replace(os.path.join(tmpdir, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return stats


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

class ArrayRecordEpisodes:
    """EpisodeSource over one split of a genie_jax dataset directory.

    read_window reads only the records (chunks) the window touches, straight from the shards
    (one lazily opened ArrayRecordReader per shard per process) and decodes the Example proto
    itself; the bytes are exactly what TFDS would decode.
    """

    def __init__(self, data_dir: str, split: str):
        self.data_dir, self.split = data_dir, split
        index = _load_index(data_dir)
        if split not in index["splits"]:
            have = sorted(k for k, v in index["splits"].items() if v)
            raise DatasetError(f"{data_dir} has no episodes in split {split!r} (has {have})")
        self.frame_shape = tuple(index["frame_shape"])
        self.record_frames = int(index["record_frames"])
        self.episodes = index["splits"][split]
        self.has_actions = all(e["has_actions"] for e in self.episodes)
        num_shards = max(e["shard"] for e in self.episodes) + 1
        from tensorflow_datasets.core import naming
        tmpl = naming.ShardedFileTemplate(data_dir=data_dir, dataset_name=DATASET_NAME,
                                          split=split, filetype_suffix="array_record")
        self._paths = [os.fspath(tmpl.sharded_filepath(shard_index=i, num_shards=num_shards))
                       for i in range(num_shards)]
        self._lengths = np.array([e["num_frames"] for e in self.episodes], np.int64)
        self._shard = np.array([e["shard"] for e in self.episodes], np.int64)
        self._first = np.array([e["first_record"] for e in self.episodes], np.int64)
        self._readers: list = [None] * num_shards
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"] = [None] * len(self._paths)
        state.pop("_lock")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_lengths(self) -> np.ndarray:
        return self._lengths.copy()

    def metadata(self, episode: int) -> dict:
        return dict(self.episodes[episode])

    def _reader(self, shard: int):
        r = self._readers[shard]
        if r is None:
            from array_record.python import array_record_module
            with self._lock:
                r = self._readers[shard]
                if r is None:
                    r = array_record_module.ArrayRecordReader(
                        self._paths[shard], "readahead_buffer_size:0",
                        file_reader_buffer_size=32768)
                    self._readers[shard] = r
        return r

    def read_window(self, episode: int, start: int, length: int) -> dict[str, np.ndarray]:
        n = int(self._lengths[episode])
        if start < 0 or length < 1 or start + length > n:
            raise IndexError(f"window [{start}, {start + length}) outside episode {episode} of "
                             f"{n} frames")
        R = self.record_frames
        r0, r1 = start // R, (start + length - 1) // R
        first = int(self._first[episode])
        raw = self._reader(int(self._shard[episode])).read(list(range(first + r0, first + r1 + 1)))
        pb = _example_pb2()
        H, W, C = self.frame_shape
        frames, actions = [], []
        for rec in raw:
            f = pb.Example.FromString(rec).features.feature
            frames.append(np.frombuffer(f["frames"].bytes_list.value[0], np.uint8))
            actions.extend(f["actions"].int64_list.value)
        lo = start - r0 * R
        flat = frames[0] if len(frames) == 1 else np.concatenate(frames)
        fr = flat.reshape(-1, H, W, C)[lo:lo + length]
        act = np.asarray(actions[lo:lo + length], np.int32)
        # frombuffer views are read-only; hand out writable arrays either way.
        return {"frames": fr.copy() if len(frames) == 1 else fr, "actions": act}

    def read_episode(self, episode: int) -> dict[str, np.ndarray]:
        return self.read_window(episode, 0, int(self._lengths[episode]))


def _load_index(data_dir: str) -> dict:
    if not os.path.isdir(data_dir):
        raise DatasetError(f"dataset directory {data_dir!r} does not exist")
    path = os.path.join(data_dir, INDEX_FILE)
    if not os.path.exists(path) or not os.path.exists(os.path.join(data_dir, "dataset_info.json")):
        hint = ""
        if os.path.isdir(os.path.join(data_dir, STAGING_DIR)):
            hint = " (it has unfinished conversion work in .staging: re-run the convert command)"
        raise DatasetError(f"{data_dir!r} is not a genie_jax dataset: no {INDEX_FILE} and "
                           f"dataset_info.json{hint}")
    with open(path) as f:
        index = json.load(f)
    if index.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{data_dir!r}: unsupported genie_jax dataset format "
                           f"{index.get('format_version')!r} (expected {FORMAT_VERSION})")
    return index


def open_source(data_dir: str, split: str) -> ArrayRecordEpisodes:
    """EpisodeSource for `split` of the genie_jax dataset in `data_dir` (clear error otherwise)."""
    return ArrayRecordEpisodes(os.fspath(data_dir), split)
