"""Resumable unit runs: the one orchestration behind `genie-jax data convert` and the game
generators (the staged-unit format itself is described in genie_jax/data/shards.py).

A caller plans its work as a list of `Unit`s. Each unit has a *key*, the JSON value that stands
for the work it holds (a converted file's [size, mtime_ns], a block's episode seeds); the key is
stored in the unit's manifest under `key_field`. `run_units` then

  1. refuses a directory written with other options (shards.check_options);
  2. applies the removal policy below;
  3. skips every finished unit whose stored key equals the planned one;
  4. runs the others, in this process or on `workers` threads / spawned processes: a fresh
     shards.UnitWriter per unit, `fill(unit, writer)` streams the episodes into it, the unit is
     committed when fill returns and aborted when it raises; a failing unit is logged by its
     label and reported, and the run goes on;
  5. publishes every finished unit with shards.finalize, if there is one.

Removal policy (the same for every caller; one run per dataset directory at a time):
  * Temporaries: every name in DIR/.staging holding ".tmp-" (a file or a folder) belongs to no
    finished unit; they are what a killed run left, and are removed when a run starts.
  * Stale units: a finished unit whose stored key differs from the planned key (the input file
    changed, a block was re-planned), or that the plan no longer holds while its name starts
    with `owned_prefix` (a generator owns every block of its game; converted inputs of earlier
    runs are kept), is removed before any work: its manifest first, so that from then on it is
    an unfinished unit, then its shards.
  * Failed or interrupted units: the writer is aborted, which removes its temporaries; nothing
    is left under a final name, so the next run does the unit again.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import Any, Callable

from genie_jax.data import shards


@dataclasses.dataclass(frozen=True)
class Unit:
    name: str  # file stem in DIR/.staging
    key: Any  # JSON value identifying the work; a finished unit with another key is stale
    meta: dict  # manifest entries besides the key
    label: str = ""  # how log lines name the unit (default: its name)
    size: int = 1  # weight on the progress bar (files, episodes)
    job: Any = None  # whatever `fill` needs besides the key


@dataclasses.dataclass
class RunResult:
    written: int = 0  # units finished by this run
    already_done: int = 0  # finished units of earlier runs, kept
    skipped: list = dataclasses.field(default_factory=list)  # (Unit, reason) of failed units
    episodes: int = 0  # of all finished units (written or kept)
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    splits: dict | None = None  # shards.finalize's stats when anything was published

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    def _count(self, episodes: int, frames: int, nbytes: int) -> None:
        self.episodes += episodes
        self.frames += frames
        self.bytes += nbytes


def error_text(e: BaseException) -> str:
    """Default reason for a failed unit: the error's message, cut to 300 characters."""
    return str(e)[:300]


def remove_temporaries(staging: str) -> None:
    """Remove what a killed run left in `staging` (see the removal policy)."""
    if not os.path.isdir(staging):
        return
    for name in os.listdir(staging):
        if ".tmp-" not in name:
            continue
        path = os.path.join(staging, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def remove_unit(staging: str, unit: str) -> None:
    """Remove a finished unit: manifest first (it is unfinished from then on), then its shards."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(staging, unit + ".json"))
    for split in shards.SPLITS:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(staging, f"{unit}.{split}.array_record"))


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _run_one(task: tuple) -> tuple[shards.UnitResult | None, str | None]:
    """Write one unit (in a worker): (result, None) when committed, (None, reason) when not."""
    staging, unit, fill, writer_args, key_field, reason = task
    writer = shards.UnitWriter(staging, unit.name, unit_meta={**unit.meta, key_field: unit.key},
                               **writer_args)
    try:
        fill(unit, writer)
        return writer.commit(), None
    except Exception as e:  # noqa: BLE001 - one failing unit never ends the run
        writer.abort()
        return None, reason(e)
    except BaseException:
        writer.abort()
        raise


def _outcomes(tasks: list[tuple], workers: int, processes: bool):
    """Yield (unit, (result, reason)) as units finish."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task[1], _run_one(task)
        return
    n = min(workers, len(tasks))
    if processes:
        ex = concurrent.futures.ProcessPoolExecutor(
            n, mp_context=multiprocessing.get_context("spawn"))
    else:
        ex = concurrent.futures.ThreadPoolExecutor(n)
    try:
        futures = {ex.submit(_run_one, task): task for task in tasks}
        for fut in concurrent.futures.as_completed(futures):
            task = futures[fut]
            try:
                out = fut.result()
            except Exception as e:  # noqa: BLE001 - e.g. a worker process was killed
                out = None, task[-1](e)
            yield task[1], out
    finally:
        ex.shutdown(cancel_futures=True)


def run_units(out_dir: str, units: list[Unit], fill: Callable[[Unit, shards.UnitWriter], None],
              *, options: dict, writer_args: dict, key_field: str,
              owned_prefix: str | None = None, workers: int = 1, processes: bool = True,
              reason: Callable[[BaseException], str] = error_text, progress: bool = True,
              progress_unit: str = "unit", desc: str = "", description: str = "",
              log: Callable[[str], None] = print) -> RunResult:
    """Write `units` into the dataset at out_dir (resumable; see the module docstring).

    fill(unit, writer) streams one unit's episodes into a shards.UnitWriter; it must be picklable
    (a module-level function or a functools.partial of one) when processes=True. writer_args are
    the UnitWriter keyword arguments besides the staging folder, unit name and manifest entries.
    reason(error) names why a unit failed. description goes into the TFDS metadata.
    """
    from tqdm import tqdm
    os.makedirs(out_dir, exist_ok=True)
    shards.check_options(out_dir, options)
    staging = os.path.join(out_dir, shards.STAGING_DIR)
    remove_temporaries(staging)
    if owned_prefix:
        planned = {u.name for u in units}
        for name in sorted(os.listdir(staging)):
            unit = name[:-len(".json")]
            if name.startswith(owned_prefix) and name.endswith(".json") and unit not in planned:
                remove_unit(staging, unit)
    result = RunResult()
    todo = []
    for u in units:
        m = shards.unit_done(staging, u.name)
        if m is not None and m.get(key_field) != _as_json(u.key):
            remove_unit(staging, u.name)
            m = None
        if m is None:
            todo.append(u)
        else:
            result.already_done += 1
            result._count(len(m["episodes"]), sum(e["num_frames"] for e in m["episodes"]),
                          m["bytes"])
    t0 = time.perf_counter()
    bar = tqdm(total=sum(u.size for u in units), initial=sum(u.size for u in units) -
               sum(u.size for u in todo), unit=progress_unit, disable=not progress,
               file=sys.stderr, desc=desc)
    tasks = [(staging, u, fill, writer_args, key_field, reason) for u in todo]
    outcomes = _outcomes(tasks, workers, processes)
    try:
        for unit, (res, why) in outcomes:
            if res is None:
                result.skipped.append((unit, why))
                log(f"skipped {unit.label or unit.name}: {why}")
            else:
                result.written += 1
                result._count(res.episodes, res.frames, res.bytes)
            bar.update(unit.size)
            bar.set_postfix(frames=result.frames, skipped=len(result.skipped))
    finally:
        outcomes.close()
        bar.close()
    result.seconds = time.perf_counter() - t0
    if result.written + result.already_done:
        result.splits = shards.finalize(out_dir, description=description)
    return result
