"""A run folder, read and written in one place.

Layout of WORKDIR (written by `genie-jax train`):
  config.json            the full ml_collections config of the run
  checkpoints/STEP/      one orbax Composite per saved step:
      state        the whole train state {step, params, model_state, opt_state, rng,
                   first_bad_step}, sharded
      loader       the grain iterator position (one file per process)
      meta         JSON: the stage name and the config sections that fix parameter shapes
      log_window   JSON (optional): train metrics of the steps since the last log record, so a
                   resumed run logs the same means as an uninterrupted one
  metrics.jsonl, summary.json, tb/, *.png   (the trainer's logs)

Orbax writes each step into a temporary folder and renames it when complete, so a crash mid-save
never replaces a good checkpoint. A step that is present but unreadable is skipped, with a
warning, in favour of the one before it: when resuming (`Checkpointer.restore_latest`) and when
another stage or the sampler reads params (`Run.restore`).

Users: the trainer (Checkpointer), stages with frozen inputs and the sampler (Run,
abstract_variables), evaluation (Run.steps). Nothing here imports the trainer or the stages.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import linen as nn

from genie_jax.errors import UserError

CHECKPOINTS = "checkpoints"


# ---- meta: the stage name and the shape-deciding config sections --------------------------

def flatten_meta(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_meta(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def stage_meta(stage: str, sections: dict) -> dict:
    """The meta a checkpoint of `stage` with these shape sections (ConfigDicts or dicts) carries."""
    return {"stage": stage, **flatten_meta(
        {k: (v.to_dict() if hasattr(v, "to_dict") else dict(v)) for k, v in sections.items()})}


# Shape-config keys added after runs were already being saved, with the value those older runs
# implicitly used: a checkpoint whose meta lacks such a key reads as having that value, so a
# new option that defaults to the old behaviour never makes an existing run incompatible.
# Suffix-matched ('model.X' also covers 'tokenizer.model.X' and 'lam.model.X').
META_DEFAULTS: dict[str, object] = {
    "model.temporal_pos": "learned",  # added 2026-11-26 (rotary option)
    "model.scan_layers": False,       # added 2026-11-26 (nn.scan over the blocks)
    "model.quantizer": "vq",          # added 2026-11-27 (FSQ option)
    "model.fsq_levels": [],
    "model.input": "pixels",          # added 2026-11-27 (token-input LAM)
    "model.token_codes": 0,
    "model.token_patch": 0,
    "model.temporal": "causal",       # added 2026-11-27 (per-frame tokenizer option)
    "model.copy_gate": False,         # added 2026-11-27 (dynamics copy gate)
}
# Keys of the stored sections that fix no parameter shape, so a checkpoint is never refused over
# them: how the backward pass trades memory for recompute, the VQ commitment loss weight (a
# training-loss term: a frozen model is the same model whatever it was) and where restarted VQ
# codes are drawn from (training only). Suffix-matched as
# META_DEFAULTS.
META_IGNORED = ("model.remat", "model.commitment", "model.restart_sampling")


def _matches(key: str, suffix: str) -> bool:
    return key == suffix or key.endswith("." + suffix)


def _with_defaults(saved: dict, current: dict) -> dict:
    out = dict(saved)
    for key in current:
        if key in out:
            continue
        for suffix, value in META_DEFAULTS.items():
            if _matches(key, suffix):
                out[key] = value
    return out


def meta_differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) of every shape key on which two stage metas differ,
    reading keys added later as their META_DEFAULTS and skipping META_IGNORED."""
    saved = _with_defaults(saved, current)
    out = []
    for key in sorted(set(saved) | set(current)):
        if any(_matches(key, suffix) for suffix in META_IGNORED):
            continue
        a, b = saved.get(key), current.get(key)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            out.append((key, a, b))
    return out


def check_compatible(saved: dict, current: dict, where: str) -> None:
    """Raise a UserError listing every config value that differs from the checkpoint's."""
    found = meta_differences(saved, current)
    diffs = [f"{key}: checkpoint has {a!r}, config has {b!r}" for key, a, b in found]
    if diffs:
        layout = any(key.endswith("scan_layers") for key, _, _ in found)
        raise UserError(
            f"the checkpoint at {where} was written by an incompatible config ("
            + "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")
            + "). Use a fresh --workdir, or restore the old config values."
            + (" (model.scan_layers stores the blocks' parameters stacked: a run loads only "
               "with the scan_layers it was trained with)" if layout else ""))


# ---- abstract shapes ------------------------------------------------------------------------

def strip_boxes(tree):
    """Replace flax Partitioned boxes by their values (no sharding constraint applied)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.Partitioned))


def abstract_variables(fn: Callable, *args, mesh=None, rules=None) -> Any:
    """ShapeDtypeStructs of `fn(*args)` (e.g. a model's init), without allocating anything.

    With a mesh, each leaf carries the NamedSharding its logical axis names map to under `rules`;
    without one, a single-device sharding on the first device.
    """
    if mesh is not None:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            boxed = jax.eval_shape(fn, *args)
            shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
    else:
        boxed = jax.eval_shape(fn, *args)
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: one, boxed,
                                 is_leaf=lambda x: isinstance(x, nn.Partitioned))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        strip_boxes(boxed), shardings)


# ---- reading a finished (or running) run ----------------------------------------------------

def _read_json_item(step_dir: str, item: str) -> dict:
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ck:
        return dict(ck.restore(os.path.join(step_dir, item)))


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]


class Run:
    """Read access to a run folder: its config, its steps, and params restored from them."""

    def __init__(self, workdir: str, what: str = "run"):
        self.workdir = os.path.abspath(workdir)  # orbax (tensorstore) needs absolute paths
        self.what = what  # how errors name this run, e.g. 'tokenizer.workdir'

    def config(self, stage: str | None = None) -> ml_collections.ConfigDict:
        """The config the run wrote to WORKDIR/config.json; with `stage`, a run of that stage."""
        if stage is not None and not os.path.isdir(self.workdir):
            raise UserError(f"workdir {self.workdir!r} does not exist")
        cfg = self._read_config()
        if stage is not None and cfg.get("stage") != stage:
            raise UserError(f"{self.workdir} is a {cfg.get('stage')!r} run, not a {stage} run")
        return cfg

    def _read_config(self) -> ml_collections.ConfigDict:
        path = os.path.join(self.workdir, "config.json")
        if not os.path.exists(path):
            raise UserError(f"{path} does not exist; is {self.workdir!r} a genie-jax run folder? "
                            f"({self.what})")
        try:
            with open(path) as f:
                return ml_collections.ConfigDict(json.load(f))
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e})") from None

    def steps(self) -> list[int]:
        """Finished steps (orbax renames a step folder when it is complete)."""
        d = os.path.join(self.workdir, CHECKPOINTS)
        if not os.path.isdir(d):
            return []
        return sorted(int(n) for n in os.listdir(d) if n.isdigit())

    def restore(self, abstract: Any, *, params_only: bool = True, expect_meta: dict | None = None,
                step: int | None = None) -> tuple[Any, int]:
        """Restore the newest readable step (or `step`) onto `abstract`'s shapes and shardings.

        params_only: `abstract` describes state['params'] only and nothing else is read (no
          optimizer state); else it describes the whole train state.
        expect_meta: the meta the checkpoint must carry (see `stage_meta`); None skips the check.
        -> (tree, step).
        """
        steps = self.steps()
        if step is not None:
            if step not in steps:
                raise UserError(f"{self.what}: no step {step} under {self.workdir}/{CHECKPOINTS} "
                                f"(have {steps})")
            steps = [step]
        if not steps:
            raise UserError(f"{self.what}: no checkpoint under {self.workdir!r}/{CHECKPOINTS}; "
                            f"train it first or fix the workdir in the config")
        item = {"params": abstract} if params_only else abstract
        restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        last_err: Exception | None = None
        for s in reversed(steps):
            step_dir = os.path.join(self.workdir, CHECKPOINTS, str(s))
            try:
                saved = _read_json_item(step_dir, "meta")
            except Exception as e:  # noqa: BLE001 - unreadable: try an older step
                last_err = e
                continue
            if expect_meta is not None:
                check_compatible(saved, expect_meta, f"{step_dir} ({self.what})")
            try:
                with ocp.PyTreeCheckpointer() as ck:
                    out = ck.restore(os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
                        item=item, restore_args=restore_args, partial_restore=params_only))
            except Exception as e:  # noqa: BLE001
                logging.warning("%s: step %d unreadable (%s); trying an older one", self.what, s, e)
                last_err = e
                continue
            return (out["params"] if params_only else out), s
        raise UserError(f"{self.what}: no readable checkpoint under {self.workdir}/{CHECKPOINTS} "
                        f"({type(last_err).__name__}: {_first_line(last_err)})")


# ---- writing: the trainer's resume state ----------------------------------------------------

class Checkpointer:
    """The trainer's orbax CheckpointManager over WORKDIR/checkpoints (one Composite per step)."""

    def __init__(self, workdir: str, keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINTS)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
                cleanup_tmp_directories=True),
            item_names=("state", "loader", "meta", "log_window"))

    def save(self, step: int, state: Any, loader_iter, meta: dict,
             log_window: dict | None = None) -> None:
        args = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if loader_iter is not None:
            args["loader"] = grain.checkpoint.CheckpointSave(loader_iter)
        if log_window is not None:
            args["log_window"] = ocp.args.JsonSave(log_window)
        self.manager.save(step, args=ocp.args.Composite(**args), force=True)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state: Any, loader_iter, meta: dict
                       ) -> tuple[Any, int, dict | None] | tuple[None, None, None]:
        """Restore the newest readable step -> (state, step, log_window or None).

        A checkpoint from an incompatible config raises. Unreadable steps are skipped, and moved
        to WORKDIR/checkpoints_unreadable/ once an older step restores, so the resumed run can
        save those steps again."""
        steps = self.steps()
        unreadable: list[int] = []
        for i, step in enumerate(reversed(steps)):
            step_dir = os.path.join(self.directory, str(step))
            older = steps[:len(steps) - 1 - i]
            try:
                saved_meta = _read_json_item(step_dir, "meta")
            except Exception as e:  # noqa: BLE001 - any read failure means "unreadable"
                self._warn_fallback(step, e, older)
                unreadable.append(step)
                continue
            check_compatible(saved_meta, meta, step_dir)
            args = dict(state=ocp.args.StandardRestore(abstract_state))
            if loader_iter is not None:
                args["loader"] = grain.checkpoint.CheckpointRestore(loader_iter)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**args))
            except Exception as e:  # noqa: BLE001
                self._warn_fallback(step, e, older)
                unreadable.append(step)
                continue
            self._set_aside(unreadable)
            window = None
            if os.path.isdir(os.path.join(step_dir, "log_window")):  # absent before 2026-11-26
                try:
                    window = _read_json_item(step_dir, "log_window")
                except Exception as e:  # noqa: BLE001 - only the first log record is affected
                    logging.warning("step %d: log window unreadable (%s)", step, _first_line(e))
            return restored["state"], step, window
        return None, None, None

    def _set_aside(self, steps: list[int]) -> None:
        if not steps:
            return
        if jax.process_index() == 0:
            aside = os.path.join(os.path.dirname(self.directory), "checkpoints_unreadable")
            os.makedirs(aside, exist_ok=True)
            for s in steps:
                os.replace(os.path.join(self.directory, str(s)), os.path.join(aside, str(s)))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("checkpoints_set_aside")
        self.manager.reload()

    @staticmethod
    def _warn_fallback(step: int, err: Exception, older: list[int]) -> None:
        nxt = f"falling back to step {older[-1]}" if older else "no older checkpoint; starting fresh"
        logging.warning("checkpoint at step %d is unreadable (%s: %s); %s",
                        step, type(err).__name__, _first_line(err), nxt)
        print(f"WARNING: checkpoint at step {step} is unreadable ({type(err).__name__}); {nxt}",
              flush=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
