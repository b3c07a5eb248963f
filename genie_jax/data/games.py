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

import dataclasses
import fcntl
import functools
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from genie_jax.data import shards, staging
from genie_jax.data.convert import ConvertOptions, resize_frames
from genie_jax.errors import UserError

# procgen CoinRun's 15 actions behave as 6 (GENIE_NOTES): class id per action. The one copy of
# this table: `genie-jax eval` scores latent actions against these classes.
COINRUN_ACTION_CLASSES = np.array([0, 0, 1, 2, 2, 3, 4, 4, 5, 2, 2, 2, 2, 2, 2], np.int32)
COINRUN_CLASS_NAMES = ("LEFT", "LEFT+UP", "NOOP", "UP", "RIGHT", "RIGHT+UP")
# Policy 'sticky_classes': the random policy draws one procgen action per class (LEFT, UPLEFT,
# NOOP, UP, RIGHT, UPRIGHT), so each control class is equally likely; uniform over all 15
# actions, 8 of them behave as NOOP and about a quarter of transitions change nothing on screen.
COINRUN_CLASS_ACTIONS = (1, 2, 4, 5, 7, 8)
PROCGEN_PACKAGE = "procgen-mirror==0.10.7"
WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "data_pipelines", "procgen_worker.py")


def coinrun_action_class(actions) -> np.ndarray:
    """procgen CoinRun action ids (0..14, any shape) -> int64 class ids (COINRUN_CLASS_NAMES);
    an unknown action (< 0, e.g. -1, or > 14) -> -1."""
    a = np.asarray(actions)
    out = np.full(a.shape, -1, np.int64)
    ok = (a >= 0) & (a < len(COINRUN_ACTION_CLASSES))
    out[ok] = COINRUN_ACTION_CLASSES[a[ok]]
    return out


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
    frameskip: int = 1  # CoinRun: game steps per recorded frame (Atari takes its own argument)
    policy: str = "sticky_random"  # CoinRun also 'sticky_classes' (COINRUN_CLASS_ACTIONS)

    def resize_opts(self) -> ConvertOptions:
        return ConvertOptions(height=self.height, width=self.width, resize=self.resize)

    def dataset_options(self, game: str) -> dict:
        d = dataclasses.asdict(self)
        d["fractions"] = dict(self.fractions)
        d.pop("episodes")  # may grow or shrink between runs (blocks are re-planned)
        for key, default in (("frameskip", 1), ("policy", "sticky_random")):
            if d[key] == default:  # datasets written before the option stay valid
                d.pop(key)
        d["game"] = game
        return d


def _writer_args(opts: GameOptions) -> dict:
    return dict(frame_shape=(opts.height, opts.width, 3), fractions=dict(opts.fractions),
                split_seed=opts.split_seed, split_by="episode", record_frames=opts.record_frames,
                compression=opts.compression, min_frames=opts.min_frames)


def _sticky_policy(rng: np.random.Generator, n: int, sticky: float):
    a = int(rng.integers(n))
    while True:
        if rng.random() >= sticky:
            a = int(rng.integers(n))
        yield a


def _run_blocks(out_dir: str, game: str, generator: str, opts: GameOptions, fill, workers: int,
                use_processes: bool, progress: bool, log) -> dict:
    """Plan opts.episodes as blocks of opts.block seeds (one unit each, keyed by its seeds) and
    run them with genie_jax/data/staging.py (its removal policy: blocks beyond --episodes and
    re-planned blocks are removed, failed blocks are redone by the next run)."""
    units = []
    for i, b0 in enumerate(range(0, opts.episodes, opts.block)):
        seeds = [opts.seed + e for e in range(b0, min(b0 + opts.block, opts.episodes))]
        unit = f"{game}-b{i:06d}"
        units.append(staging.Unit(unit, key=seeds, meta=dict(generator=generator),
                                  label=f"block {unit} (seeds {seeds[0]}..{seeds[-1]})",
                                  size=len(seeds)))
    run = staging.run_units(
        out_dir, units, fill, options=opts.dataset_options(game), writer_args=_writer_args(opts),
        key_field="seeds", owned_prefix=f"{game}-b", workers=workers, processes=use_processes,
        progress=progress, progress_unit="episode", desc=game, log=log,
        description=f"{game} episodes, sticky random policy, recorded by genie_jax")
    summary = dict(blocks=len(units), generated=run.written, already_done=run.already_done,
                   skipped=len(run.skipped), episodes=run.episodes, frames=run.frames,
                   bytes=run.bytes, skipped_blocks=[[u.name, why] for u, why in run.skipped],
                   seconds=run.seconds, frames_per_s=run.frames_per_s)
    if run.splits is not None:
        summary["splits"] = run.splits
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


def _coinrun_block(unit: staging.Unit, w: shards.UnitWriter, *, opts: GameOptions,
                   env_name: str, python: str) -> None:
    """Record the block's episodes (seeds = unit.key) with the procgen worker, then write them."""
    seeds = unit.key
    tmp = tempfile.mkdtemp(dir=w.staging, prefix=f"{unit.name}.tmp-")
    try:
        proc = subprocess.run(
            [python, WORKER, f"--env={env_name}", f"--seeds={','.join(map(str, seeds))}",
             f"--length={opts.length}", f"--sticky={opts.sticky}",
             f"--frameskip={opts.frameskip}", f"--out={tmp}"]
            + ([f"--actions={','.join(map(str, COINRUN_CLASS_ACTIONS))}"]
               if opts.policy == "sticky_classes" else []),
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"procgen worker failed: {proc.stderr.strip()[-500:]}")
        for seed in seeds:
            z = np.load(os.path.join(tmp, f"{env_name}-{seed}.npz"))
            frames = resize_frames(z["frames"], opts.resize_opts())
            w.begin_episode(dict(source=f"procgen:{env_name}", fps=15.0 / opts.frameskip,
                                 seed=seed, frameskip=opts.frameskip,
                                 height=opts.height, width=opts.width,
                                 terminated=bool(z["terminated"]), policy=opts.policy,
                                 sticky=opts.sticky, num_actions=int(z["num_actions"])))
            w.add(frames, z["actions"])
            w.end_episode()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def probe_coinrun_episode(meta: dict, length: int, python: str | None = None,
                          env_name: str = "coinrun"):
    """Record again the episode of a CoinRun dataset whose metadata is `meta` (its seed, sticky,
    frameskip and policy; `length` frames), with the worker's probe of every action at every
    step (procgen_worker.py --probe). -> (frames [T,64,64,3] uint8, actions [T], outcomes [T,A])
    at the game's own 64x64 resolution."""
    missing = [k for k in ("seed", "sticky") if k not in meta]
    if missing:
        raise UserError(f"episode metadata has no {', '.join(missing)}: not a "
                        f"`genie-jax data coinrun` episode ({meta.get('source', '?')})")
    python = python or ensure_procgen_venv()
    tmp = tempfile.mkdtemp(prefix="coinrun-probe-")
    try:
        seed = int(meta["seed"])
        args = [python, WORKER, f"--env={env_name}", f"--seeds={seed}", f"--length={length}",
                f"--sticky={meta['sticky']}", f"--frameskip={int(meta.get('frameskip', 1))}",
                "--probe", f"--out={tmp}"]
        if meta.get("policy", "sticky_random") == "sticky_classes":
            args.append(f"--actions={','.join(map(str, COINRUN_CLASS_ACTIONS))}")
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"procgen worker failed: {proc.stderr.strip()[-500:]}")
        z = np.load(os.path.join(tmp, f"{env_name}-{seed}.npz"))
        return z["frames"], z["actions"], z["outcomes"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate_coinrun(out_dir: str, opts: GameOptions, workers: int = 1, progress: bool = True,
                     log=print, env_name: str = "coinrun") -> dict:
    py = ensure_procgen_venv(log)
    fill = functools.partial(_coinrun_block, opts=opts, env_name=env_name, python=py)
    # Subprocesses do the work: threads are enough to run `workers` of them at once.
    return _run_blocks(out_dir, env_name, env_name, opts, fill, workers, False, progress, log)


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


def _atari_block(unit: staging.Unit, w: shards.UnitWriter, *, opts: GameOptions, game: str,
                 frameskip: int) -> None:
    ale_py = _import_ale()
    for seed in unit.key:
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


def generate_atari(out_dir: str, game: str, opts: GameOptions, workers: int = 1,
                   frameskip: int = 4, progress: bool = True, log=print) -> dict:
    games = atari_games()
    if game not in games:
        raise ValueError(f"unknown Atari game {game!r}; ale-py has: {', '.join(games)}")
    fill = functools.partial(_atari_block, opts=opts, game=game, frameskip=frameskip)
    return _run_blocks(out_dir, f"atari-{game}", f"ale:{game}", opts, fill, workers, True,
                       progress, log)
