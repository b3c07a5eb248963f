"""Game datasets with true actions: procgen CoinRun and Atari (ALE), written as genie_jax datasets.

Both record a sticky random policy (keep the previous action with probability `sticky`, else a
uniform one) and give every episode its own recorded seed (seed = base seed + episode number), so
no two episodes share a seed and each can be regenerated. actions[t] is the action taken after
frame t. Episodes end when the game terminates (procgen/ALE then have no frame after the last
action, so the last action leads to no recorded frame; metadata `terminated=True`) or at
`length` frames. Episodes are written in blocks (one staging unit per block); a re-run skips
finished blocks.

CoinRun: procgen-mirror pins numpy<2, so it runs in its own venv (created once, cached in
~/.cache/genie_jax/procgen-venv, or $GENIE_JAX_PROCGEN_VENV) via data_pipelines/procgen_worker.py
in a subprocess. Its 15 actions behave as 6 classes (see COINRUN_ACTION_CLASSES).

Atari: ale-py (optional extra `pip install genie_jax[atari]`, ROMs included), frame skip 4 by
default (one recorded frame per 4 emulator frames, the action repeated), ALE's own sticky actions
off (our policy is sticky already). Actions are indices into the game's minimal action set,
whose names are in the episode metadata.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from genie_jax.data import shards
from genie_jax.data.convert import ConvertOptions, resize_frames

# procgen CoinRun's 15 actions behave as 6 (GENIE_NOTES): class id per action.
COINRUN_ACTION_CLASSES = np.array([0, 0, 1, 2, 2, 3, 4, 4, 5, 2, 2, 2, 2, 2, 2], np.int32)
COINRUN_CLASS_NAMES = ("LEFT", "LEFT+UP", "NOOP", "UP", "RIGHT", "RIGHT+UP")
PROCGEN_PACKAGE = "procgen-mirror==0.10.7"
WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "data_pipelines", "procgen_worker.py")


@dataclasses.dataclass(frozen=True)
class GameOptions:
    episodes: int
    length: int = 1000
    height: int = 64
    width: int = 64
    resize: str = "stretch"
    sticky: float = 0.5
    seed: int = 0
    block: int = 16  # episodes per staging unit
    fractions: tuple[tuple[str, float], ...] = (("train", 0.9), ("val", 0.05), ("test", 0.05))
    split_seed: int = 0
    record_frames: int = shards.DEFAULT_RECORD_FRAMES
    compression: str = "none"
    min_frames: int = 2

    def resize_opts(self) -> ConvertOptions:
        return ConvertOptions(height=self.height, width=self.width, resize=self.resize)

    def dataset_options(self, game: str) -> dict:
        d = dataclasses.asdict(self)
        d["fractions"] = dict(self.fractions)
        d.pop("episodes")  # may grow or shrink between runs (blocks are re-planned)
        d["game"] = game
        return d


def _writer(out_dir: str, unit: str, opts: GameOptions, meta: dict) -> shards.UnitWriter:
    return shards.UnitWriter(
        os.path.join(out_dir, shards.STAGING_DIR), unit, (opts.height, opts.width, 3),
        fractions=dict(opts.fractions), split_seed=opts.split_seed, split_by="episode",
        record_frames=opts.record_frames, compression=opts.compression,
        min_frames=opts.min_frames, unit_meta=meta)


def _fill_unit(w: shards.UnitWriter, write_episodes) -> dict:
    """Run `write_episodes()`, then commit the unit; any error aborts it (nothing half-written)."""
    try:
        write_episodes()
        res = w.commit()
    except BaseException:
        w.abort()
        raise
    return dict(episodes=res.episodes, frames=res.frames, bytes=res.bytes)


def _remove_unit(staging: str, unit: str) -> None:
    os.remove(os.path.join(staging, unit + ".json"))  # manifest first: the unit is unfinished
    for split in shards.SPLITS:
        path = os.path.join(staging, f"{unit}.{split}.array_record")
        if os.path.exists(path):
            os.remove(path)


def _sticky_policy(rng: np.random.Generator, n: int, sticky: float):
    a = int(rng.integers(n))
    while True:
        if rng.random() >= sticky:
            a = int(rng.integers(n))
        yield a


def _run_blocks(out_dir: str, game: str, opts: GameOptions, run_block, workers: int,
                use_processes: bool, progress: bool, log) -> dict:
    from tqdm import tqdm
    os.makedirs(out_dir, exist_ok=True)
    shards.check_options(out_dir, opts.dataset_options(game))
    staging = os.path.join(out_dir, shards.STAGING_DIR)
    blocks = []
    for i, b0 in enumerate(range(0, opts.episodes, opts.block)):
        n = min(opts.block, opts.episodes - b0)
        blocks.append((f"{game}-b{i:06d}", [opts.seed + e for e in range(b0, b0 + n)]))
    # A different --episodes than last time: drop blocks beyond it (they would be published too).
    planned = {u for u, _ in blocks}
    for name in os.listdir(staging):
        unit = name[:-len(".json")]
        if name.startswith(f"{game}-b") and name.endswith(".json") and unit not in planned:
            _remove_unit(staging, unit)
    summary = dict(blocks=len(blocks), generated=0, already_done=0, skipped=0, episodes=0,
                   frames=0, bytes=0, skipped_blocks=[])
    todo = []
    for unit, seeds in blocks:
        m = shards.unit_done(staging, unit)
        if m is not None and m.get("seeds") != seeds:  # the last block grew or shrank: redo it
            _remove_unit(staging, unit)
            m = None
        if m is not None:
            summary["already_done"] += 1
            summary["episodes"] += len(m["episodes"])
            summary["frames"] += sum(e["num_frames"] for e in m["episodes"])
            summary["bytes"] += m["bytes"]
        else:
            todo.append((unit, seeds))
    t0 = time.perf_counter()
    bar = tqdm(total=sum(len(s) for _, s in todo), unit="episode", disable=not progress,
               file=sys.stderr, desc=game)
    if use_processes and workers > 1:
        ex = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    else:
        ex = concurrent.futures.ThreadPoolExecutor(max(1, workers))
    try:
        futs = {ex.submit(run_block, out_dir, unit, seeds, opts): (unit, seeds)
                for unit, seeds in todo}
        for fut in concurrent.futures.as_completed(futs):
            unit, seeds = futs[fut]
            try:
                r = fut.result()
                summary["generated"] += 1
                for k in ("episodes", "frames", "bytes"):
                    summary[k] += r[k]
            except Exception as e:  # noqa: BLE001 - one failing block never ends the run
                summary["skipped"] += 1
                summary["skipped_blocks"].append([unit, str(e)[:300]])
                log(f"skipped block {unit} (seeds {seeds[0]}..{seeds[-1]}): {str(e)[:300]}")
            bar.update(len(seeds))
            bar.set_postfix(frames=summary["frames"])
    finally:
        bar.close()
        ex.shutdown(cancel_futures=True)
    summary["seconds"] = time.perf_counter() - t0
    summary["frames_per_s"] = summary["frames"] / max(summary["seconds"], 1e-9)
    if summary["generated"] + summary["already_done"]:
        summary["splits"] = shards.finalize(out_dir, description=f"{game} episodes, sticky random "
                                            "policy, recorded by genie_jax")
    return summary


# ------------------------------------------------------------------------------------------------
# CoinRun (procgen, isolated venv)
# ------------------------------------------------------------------------------------------------

def procgen_venv_dir() -> str:
    return os.environ.get("GENIE_JAX_PROCGEN_VENV") or os.path.join(
        os.path.expanduser("~"), ".cache", "genie_jax", "procgen-venv")


def ensure_procgen_venv(log=print) -> str:
    """Python of a cached venv with procgen-mirror (numpy<2), created on first use."""
    venv = procgen_venv_dir()
    py = os.path.join(venv, "bin", "python")
    ready = os.path.join(venv, ".genie_jax_ready")
    if os.path.exists(ready):
        return py
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be creating it
        if os.path.exists(ready):
            return py
        log(f"creating the procgen venv in {venv} (once; {PROCGEN_PACKAGE} pins numpy<2)")
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", None) or sys.executable
        try:
            subprocess.run([base, "-m", "venv", venv], check=True, capture_output=True, text=True)
            subprocess.run([py, "-m", "pip", "install", "--quiet", PROCGEN_PACKAGE],
                           check=True, capture_output=True, text=True)
            subprocess.run([py, "-c", "import procgen, numpy; assert numpy.__version__ < '2'"],
                           check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"could not create the procgen venv in {venv}: "
                               f"{' '.join(map(str, e.cmd))} failed: "
                               f"{(e.stderr or e.stdout or '').strip()[-500:]}") from None
        with open(ready, "w") as f:
            f.write(PROCGEN_PACKAGE + "\n")
    return py


def _coinrun_block(out_dir: str, unit: str, seeds: list[int], opts: GameOptions,
                   env_name: str = "coinrun", python: str = "") -> dict:
    staging = os.path.join(out_dir, shards.STAGING_DIR)
    tmp = tempfile.mkdtemp(dir=staging, prefix=f"{unit}.tmp-")
    try:
        proc = subprocess.run(
            [python, WORKER, f"--env={env_name}", f"--seeds={','.join(map(str, seeds))}",
             f"--length={opts.length}", f"--sticky={opts.sticky}", f"--out={tmp}"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"procgen worker failed: {proc.stderr.strip()[-500:]}")
        w = _writer(out_dir, unit, opts, dict(generator=env_name, seeds=seeds))

        def episodes():
            for seed in seeds:
                z = np.load(os.path.join(tmp, f"{env_name}-{seed}.npz"))
                frames = resize_frames(z["frames"], opts.resize_opts())
                w.begin_episode(dict(source=f"procgen:{env_name}", fps=15.0, seed=seed,
                                     height=opts.height, width=opts.width,
                                     terminated=bool(z["terminated"]), policy="sticky_random",
                                     sticky=opts.sticky, num_actions=int(z["num_actions"])))
                w.add(frames, z["actions"])
                w.end_episode()
        return _fill_unit(w, episodes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate_coinrun(out_dir: str, opts: GameOptions, workers: int = 1, progress: bool = True,
                     log=print, env_name: str = "coinrun") -> dict:
    py = ensure_procgen_venv(log)

    def run(out, unit, seeds, o):
        return _coinrun_block(out, unit, seeds, o, env_name=env_name, python=py)

    # Subprocesses do the work: threads are enough to run `workers` of them at once.
    return _run_blocks(out_dir, env_name, opts, run, workers, False, progress, log)


# ------------------------------------------------------------------------------------------------
# Atari (ale-py)
# ------------------------------------------------------------------------------------------------

def _import_ale():
    try:
        import ale_py
        import ale_py.roms  # noqa: F401
    except ImportError:
        raise RuntimeError("Atari needs ale-py: pip install 'genie_jax[atari]' "
                           "(or pip install ale-py)") from None
    return ale_py


def atari_games() -> list[str]:
    return sorted(_import_ale().roms.get_all_rom_ids())


def _atari_block(out_dir: str, unit: str, seeds: list[int], opts: GameOptions,
                 game: str = "", frameskip: int = 4) -> dict:
    ale_py = _import_ale()
    w = _writer(out_dir, unit, opts, dict(generator=f"ale:{game}", seeds=seeds))

    def episodes():
        for seed in seeds:
            ale = ale_py.ALEInterface()
            ale.setLoggerMode(ale_py.LoggerMode.Error)
            ale.setInt("random_seed", int(seed) % (2**31))
            ale.setFloat("repeat_action_probability", 0.0)
            ale.loadROM(ale_py.roms.get_rom_path(game))
            actions_set = ale.getMinimalActionSet()
            rng = np.random.default_rng(seed)
            policy = _sticky_policy(rng, len(actions_set), opts.sticky)
            frames, acts, terminated = [], [], False
            for _ in range(opts.length):
                frames.append(ale.getScreenRGB())
                a = next(policy)
                acts.append(a)
                for _ in range(frameskip):
                    ale.act(actions_set[a])
                if ale.game_over():
                    terminated = True
                    break
            w.begin_episode(dict(source=f"ale:{game}", fps=60.0 / frameskip, seed=seed,
                                 height=opts.height, width=opts.width, terminated=terminated,
                                 policy="sticky_random", sticky=opts.sticky, frameskip=frameskip,
                                 action_names=[str(x).split(".")[-1] for x in actions_set]))
            w.add(resize_frames(np.stack(frames), opts.resize_opts()), np.array(acts, np.int32))
            w.end_episode()
    return _fill_unit(w, episodes)


class _AtariRun:
    def __init__(self, game: str, frameskip: int):
        self.game, self.frameskip = game, frameskip

    def __call__(self, out, unit, seeds, o):
        return _atari_block(out, unit, seeds, o, game=self.game, frameskip=self.frameskip)


def generate_atari(out_dir: str, game: str, opts: GameOptions, workers: int = 1,
                   frameskip: int = 4, progress: bool = True, log=print) -> dict:
    games = atari_games()
    if game not in games:
        raise ValueError(f"unknown Atari game {game!r}; ale-py has: {', '.join(games)}")
    return _run_blocks(out_dir, f"atari-{game}", opts, _AtariRun(game, frameskip), workers,
                       True, progress, log)


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=1, default=str)
