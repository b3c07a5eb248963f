"""Token cache: the frozen tokenizer's tokens (and the frozen LAM's latent actions) of every
training window, encoded once, so that the dynamics stage trains on tokens and reads no pixels.

Why per window, not per frame: the tokenizer is an ST transformer with causal temporal attention
and absolute temporal position embeddings, so a frame's tokens depend on its slot in the window
and on the frames before it. The cache therefore holds, for every window the loader enumerates
(`WindowIndex` over the train split: episode, start, length = data.num_frames, stride 1), the
tokens of that window exactly as the training step would encode them. Window w of the cache is
window w of the frames loader, so the same seed shuffles both into the same batches and a grain
iterator checkpoint means the same position in either.

Layout of a cache directory DIR (written by `genie-jax data tokenize`, see commands/tokenize_cmd.py):

  DIR/plan.json            what the cache is of, written first: the dataset's identity, split,
                           window length and stride, number of windows, windows per unit, token
                           dtype, the tokenizer (and frozen LAM) run folders with the shape meta
                           and checkpoint step their params came from
  DIR/unit-00000.npy ...   one .npy structured array per unit of `unit_windows` consecutive
                           windows: tokens uint16 (int32 past 65536 codes) [T, N]; actions int32
                           [T] (the recorded ones, -1 unknown); latent_actions int32 [T-1] (only
                           with a frozen LAM). Written under a temporary name and renamed, so a
                           unit file under its final name is finished.
  DIR/token_cache.json     the plan plus totals, written once every unit is there: it makes the
                           cache live. A reader refuses a folder without it.

Units are shared out round-robin over `--shard=i/n`, so independent processes (hosts) encode
disjoint windows into one folder; whichever finds every unit present publishes the cache. A
re-run skips finished units; a folder planned for anything else (another tokenizer step, window
length, dataset) is refused, never overwritten.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time

import numpy as np

from genie_jax.errors import UserError
from genie_jax.media import write_text

PLAN_FILE = "plan.json"
META_FILE = "token_cache.json"
FORMAT_VERSION = 1
UNIT_WINDOWS = 4096  # windows per unit file (N=256 tokens x 4 frames: 8 MiB)
CONFIG_KEY = "data.token_cache"


def token_dtype(num_codes: int) -> np.dtype:
    return np.dtype(np.uint16 if num_codes <= 2 ** 16 else np.int32)


def record_dtype(num_frames: int, tokens_per_frame: int, num_codes: int,
                 latent: bool) -> np.dtype:
    fields = [("tokens", token_dtype(num_codes), (num_frames, tokens_per_frame)),
              ("actions", np.int32, (num_frames,))]
    if latent:
        fields.append(("latent_actions", np.int32, (num_frames - 1,)))
    return np.dtype(fields)


def dataset_identity(data_cfg) -> dict:
    """What makes two datasets the same for a cache: an ArrayRecord dataset's episode index
    (its hash; the folder may move), or the settings that generate the procedural one."""
    if data_cfg.source == "arrayrecord":
        from genie_jax.data.shards import INDEX_FILE
        path = os.path.join(data_cfg.dir, INDEX_FILE)
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
        except OSError as e:
            raise UserError(f"cannot read {path} (data.dir): {e.strerror}") from None
        return {"source": "arrayrecord", "index_sha256": digest}
    keys = ("train_episodes", "episode_length", "resolution", "num_sprites", "seed")
    return {"source": data_cfg.source, **{k: data_cfg[k] for k in keys}}


def _json(value):
    return json.loads(json.dumps(value, default=list))


def expected_plan(config, *, lam: bool) -> dict:
    """The plan fields a dynamics config needs a cache to match (steps are checked separately,
    against the steps the trainer restores: see DynamicsStage.check_frozen)."""
    from genie_jax.runs import stage_meta
    out = {"format_version": FORMAT_VERSION, "dataset": dataset_identity(config.data),
           "split": "train", "num_frames": int(config.data.num_frames), "window_stride": 1,
           "tokenizer": {"workdir": os.path.abspath(config.tokenizer.workdir),
                         "meta": stage_meta("tokenizer", {"model": config.tokenizer.model})}}
    if lam:
        out["lam"] = {"workdir": os.path.abspath(config.lam.workdir),
                      "meta": stage_meta("lam", {"model": config.lam.model})}
    return _json(out)


def _diff(have: dict, want: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(key, have, want) of every field of `want` that `have` lacks or holds otherwise; a run's
    stage meta compares as checkpoints do (runs.meta_differences: e.g. model.remat fixes no
    token, and a key added later reads as its old default)."""
    from genie_jax.runs import meta_differences
    out = []
    for k, w in want.items():
        h = have.get(k)
        if k == "meta" and isinstance(w, dict) and isinstance(h, dict):
            out += [(f"{prefix}meta.{key}", a, b) for key, a, b in meta_differences(h, w)]
        elif isinstance(w, dict) and isinstance(h, dict):
            out += _diff(h, w, f"{prefix}{k}.")
        elif h != w:
            out.append((f"{prefix}{k}", h, w))
    return out


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


class TokenCache:
    """A finished cache, random-access by window id: {'tokens', 'actions'[, 'latent_actions']}."""

    def __init__(self, cache_dir: str):
        self.dir = os.fspath(cache_dir)
        path = os.path.join(self.dir, META_FILE)
        if not os.path.exists(path):
            hint = (" (it holds an unfinished one: run the other shards of `genie-jax data "
                    "tokenize`)") if os.path.exists(os.path.join(self.dir, PLAN_FILE)) else ""
            raise UserError(f"{CONFIG_KEY}={self.dir!r} is not a finished token cache: no "
                            f"{META_FILE}{hint}")
        with open(path) as f:
            self.meta = json.load(f)
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{path}: token cache format {self.meta.get('format_version')!r}, "
                            f"expected {FORMAT_VERSION}; re-run `genie-jax data tokenize`")
        self.num_windows = int(self.meta["num_windows"])
        self.unit_windows = int(self.meta["unit_windows"])
        self.has_latent = "lam" in self.meta
        self._units: dict[int, np.ndarray] = {}

    def __getstate__(self):  # grain workers reopen the memory maps
        return {**self.__dict__, "_units": {}}

    def __len__(self) -> int:
        return self.num_windows

    def _unit(self, u: int) -> np.ndarray:
        arr = self._units.get(u)
        if arr is None:
            arr = self._units[u] = np.load(unit_path(self.dir, u), mmap_mode="r")
        return arr

    def __getitem__(self, window: int) -> dict[str, np.ndarray]:
        window = int(window)
        if not 0 <= window < self.num_windows:
            raise IndexError(window)
        u, j = divmod(window, self.unit_windows)
        rec = self._unit(u)[j]
        return {k: np.array(rec[k]) for k in rec.dtype.names}

    def windows(self, length: int, stride: int) -> "TokenCache":
        """The loader's hook: this cache as the windows of `length` frames, `stride` apart."""
        if (length, stride) != (self.meta["num_frames"], self.meta["window_stride"]):
            raise UserError(
                f"{CONFIG_KEY}: {self.dir}/{META_FILE} holds windows of {self.meta['num_frames']} "
                f"frames (stride {self.meta['window_stride']}), but data.num_frames={length} "
                f"(stride {stride}); re-run `genie-jax data tokenize` into another folder")
        return self

    def check(self, want: dict) -> None:
        """A one-line UserError naming the file and the first mismatching field."""
        bad = _diff(self.meta, want)
        if bad:
            key, have, exp = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise UserError(
                f"{CONFIG_KEY}: {os.path.join(self.dir, META_FILE)} was made with {key}="
                f"{_short(have)}, but this config needs {_short(exp)}{more}; re-run "
                f"`genie-jax data tokenize` with this config into another folder")

    def check_steps(self, steps: dict[str, int]) -> None:
        """The frozen runs' restored steps must be those the cache was encoded with."""
        for name, step in steps.items():
            if name in self.meta and self.meta[name]["step"] != step:
                raise UserError(
                    f"{CONFIG_KEY}: {os.path.join(self.dir, META_FILE)} holds tokens of {name} "
                    f"step {self.meta[name]['step']}, but {name}.workdir now restores step "
                    f"{step}: the cache is stale; re-run `genie-jax data tokenize` into another "
                    f"folder")


def unit_path(cache_dir: str, unit: int) -> str:
    return os.path.join(cache_dir, f"unit-{unit:05d}.npy")


def _write_unit(cache_dir: str, unit: int, records: np.ndarray) -> None:
    """Atomic: a temporary name, then a rename (a killed run leaves only a .tmp- file)."""
    final = unit_path(cache_dir, unit)
    tmp = final[:-len(".npy")] + f".tmp-{os.getpid()}.npy"
    try:
        np.save(tmp, records)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _remove_temporaries(cache_dir: str, units: list[int]) -> None:
    """What a killed run left of `units` (only these: other shards may be writing theirs)."""
    prefixes = tuple(f"unit-{u:05d}.tmp-" for u in units)
    for name in os.listdir(cache_dir):
        if name.startswith(prefixes):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(cache_dir, name))


def _claim_plan(cache_dir: str, plan: dict) -> None:
    """Write plan.json, or refuse a folder planned for something else. Shards that start
    together may both write it (the same plan, atomically); each then reads back the one there."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, PLAN_FILE)
    if not os.path.exists(path):
        names = [n for n in os.listdir(cache_dir) if not n.startswith(".") and ".tmp-" not in n]
        if names and PLAN_FILE not in names:
            raise UserError(f"--out={cache_dir} is not empty and holds no {PLAN_FILE}; give an "
                            f"empty or new folder")
        if PLAN_FILE not in names:
            write_text(path, json.dumps(plan, indent=1))
    with open(path) as f:
        old = json.load(f)
    bad = _diff(old, plan)
    if bad:
        key, have, exp = bad[0]
        raise UserError(f"{cache_dir} holds a token cache made with {key}={_short(have)}, not "
                        f"{_short(exp)}; use another --out or delete that folder")


def _encoder(stage, frozen: dict):
    """jitted frames [b,T,H,W,C] -> tokens [b,T,N] (+ latent actions [b,T-1]), as the train step
    encodes them (stages/dynamics.py: encode_tokens, lam_actions)."""
    import jax
    from genie_jax.stages.dynamics import encode_tokens, lam_actions

    @jax.jit
    def encode(params, frames):
        out = {"tokens": encode_tokens(stage.tokenizer, params["tokenizer"], frames)}
        if "lam" in params:
            lam_tokens = out["tokens"] if stage.lam.input == "tokens" else None
            out["latent_actions"] = lam_actions(stage.lam, params["lam"], frames, lam_tokens)
        return out
    return lambda frames: jax.device_get(encode(frozen, frames))


def _read_windows(windows, ids: range) -> list[dict]:
    """Windows `ids` of a WindowDataSource, reading each episode's span once (consecutive
    windows of an episode overlap in all but one frame)."""
    out, i = [], ids.start
    while i < ids.stop:
        ep, start = windows.index.locate(i)
        j = i + 1
        while j < ids.stop and windows.index.locate(j)[0] == ep:
            j += 1
        last = windows.index.locate(j - 1)[1]
        T = windows.index.length
        span = windows.source.read_window(ep, start, last + T - start)
        for s in range(start, last + 1, windows.index.stride):
            out.append({k: v[s - start:s - start + T] for k, v in span.items()})
        i = j
    return out


def write_cache(config, out_dir: str, *, shard: int = 0, num_shards: int = 1,
                batch_size: int = 0, unit_windows: int = UNIT_WINDOWS,
                progress: bool = True) -> dict:
    """Encode this shard's units of the train windows of dynamics `config` into out_dir (resumable);
    publish the cache when every unit is there. -> summary dict."""
    from tqdm import tqdm

    from genie_jax.data.loader import WindowDataSource
    from genie_jax.stages.base import restore_frozen
    from genie_jax.stages.dynamics import DynamicsStage

    if config.get("stage") != "dynamics":
        raise UserError(f"data tokenize needs a dynamics config (stage={config.get('stage')!r})")
    if not 0 <= shard < num_shards:
        raise UserError(f"--shard={shard}/{num_shards}: need 0 <= i < n")
    if config.lam.mode == "cotrain":
        raise UserError("lam.mode=cotrain trains the LAM on frames, so its batches need pixels "
                        "and a token cache cannot replace them; use lam.mode=frozen or "
                        "true_actions")
    stage = DynamicsStage(config)
    lam = config.lam.mode == "frozen"
    T = int(config.data.num_frames)
    windows = WindowDataSource(stage.frames_source(), T, 1)
    if unit_windows < 1:
        raise UserError(f"--unit_windows must be >= 1, got {unit_windows}")
    W, K = len(windows), unit_windows
    num_units = -(-W // K)

    inputs = stage.frozen_inputs()
    frozen, steps = restore_frozen(inputs, {k: fi.abstract() for k, fi in inputs.items()})
    plan = expected_plan(config, lam=lam)
    plan.update(num_windows=W, unit_windows=K, num_units=num_units,
                token_dtype=str(token_dtype(stage.model.num_codes)),
                tokens_per_frame=stage.model.tokens_per_frame,
                dataset_dir=os.path.abspath(config.data.dir) if config.data.dir else "")
    for name in steps:
        plan[name]["step"] = steps[name]
    plan = _json(plan)
    _claim_plan(out_dir, plan)

    mine = [u for u in range(num_units) if u % num_shards == shard]
    _remove_temporaries(out_dir, mine)
    todo = [u for u in mine if not os.path.exists(unit_path(out_dir, u))]
    B = batch_size or int(config.data.batch_size)
    dtype = record_dtype(T, stage.model.tokens_per_frame, stage.model.num_codes, lam)
    encode = _encoder(stage, frozen)
    t0 = time.perf_counter()
    n_done = 0
    bar = tqdm(total=sum(min(K, W - u * K) for u in todo), unit="window", disable=not progress,
               desc=f"tokenize {shard}/{num_shards}")
    try:
        for u in todo:
            ids = range(u * K, min(W, (u + 1) * K))
            recs = np.zeros(len(ids), dtype)
            for b0 in range(0, len(ids), B):
                chunk = _read_windows(windows, range(ids.start + b0, min(ids.stop, ids.start + b0 + B)))
                frames = np.stack([c["frames"] for c in chunk])
                n = len(chunk)
                if n < B:  # one compile: pad the last batch (rows are encoded independently)
                    frames = np.concatenate([frames, np.repeat(frames[-1:], B - n, 0)])
                out = encode(frames)
                sl = slice(b0, b0 + n)
                recs["tokens"][sl] = out["tokens"][:n]
                recs["actions"][sl] = np.stack([c["actions"] for c in chunk])
                if lam:
                    recs["latent_actions"][sl] = out["latent_actions"][:n]
                bar.update(n)
            _write_unit(out_dir, u, recs)
            n_done += len(ids)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    summary = {"out": out_dir, "shard": f"{shard}/{num_shards}", "num_windows": W,
               "units": num_units, "units_written": len(todo), "windows_encoded": n_done,
               "seconds": seconds, "windows_per_s": n_done / max(seconds, 1e-9), "steps": steps}
    return {**summary, **publish(out_dir)}


def publish(out_dir: str) -> dict:
    """Make the cache live (token_cache.json) if every planned unit is written; reads no model,
    so one process of a multi-process job can do it after the others are done.
    -> {'published': bool, 'units_missing': int[, 'bytes': int]}."""
    with open(os.path.join(out_dir, PLAN_FILE)) as f:
        plan = json.load(f)
    units = range(plan["num_units"])
    missing = [u for u in units if not os.path.exists(unit_path(out_dir, u))]
    if missing:
        return {"published": False, "units_missing": len(missing)}
    nbytes = sum(os.path.getsize(unit_path(out_dir, u)) for u in units)
    write_text(os.path.join(out_dir, META_FILE), json.dumps({**plan, "bytes": nbytes}, indent=1))
    return {"published": True, "units_missing": 0, "bytes": nbytes}
