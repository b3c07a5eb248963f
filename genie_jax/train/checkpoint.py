"""Resume state on disk: one orbax Composite per step holding

  state   the whole train state (params, optimizer state, step, rng, vq stats), sharded
  loader  the grain iterator position (one file per process)
  meta    JSON: stage name and the config sections that decide parameter shapes

Orbax writes each step into a temporary folder and renames it when complete, so a crash mid-save
never replaces a good checkpoint. A step that is present but unreadable is skipped on restore,
with a warning, in favour of the previous one.
"""
from __future__ import annotations

import json
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from genie_jax.errors import UserError


class Checkpointer:
    def __init__(self, directory: str, keep: int, async_save: bool = True):
        self.directory = directory
        self.manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
                cleanup_tmp_directories=True),
            item_names=("state", "loader", "meta"))

    def save(self, step: int, state: Any, loader_iter, meta: dict, force: bool = False) -> None:
        args = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if loader_iter is not None:
            args["loader"] = grain.checkpoint.CheckpointSave(loader_iter)
        self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def read_meta(self, step: int) -> dict:
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore_latest(self, abstract_state: Any, loader_iter, meta: dict,
                       check_meta) -> tuple[Any, int] | tuple[None, None]:
        """Restore the newest readable step. Incompatible configs raise; unreadable steps are skipped."""
        steps = self.steps()
        for i, step in enumerate(reversed(steps)):
            try:
                saved_meta = self.read_meta(step)
            except Exception as e:  # noqa: BLE001 - any read failure means "unreadable"
                self._warn_fallback(step, e, steps[:len(steps) - 1 - i])
                continue
            check_meta(saved_meta, meta, f"{self.directory}/{step}")
            args = dict(state=ocp.args.StandardRestore(abstract_state))
            if loader_iter is not None:
                args["loader"] = grain.checkpoint.CheckpointRestore(loader_iter)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**args))
            except Exception as e:  # noqa: BLE001
                self._warn_fallback(step, e, steps[:len(steps) - 1 - i])
                continue
            return restored["state"], step
        return None, None

    @staticmethod
    def _warn_fallback(step: int, err: Exception, older: list[int]) -> None:
        nxt = f"falling back to step {older[-1]}" if older else "no older checkpoint; starting fresh"
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        logging.warning("checkpoint at step %d is unreadable (%s: %s); %s",
                        step, type(err).__name__, msg, nxt)
        print(f"WARNING: checkpoint at step {step} is unreadable ({type(err).__name__}); {nxt}",
              flush=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def check_compatible(saved: dict, current: dict, where: str) -> None:
    """Raise a UserError listing every config value that differs from the checkpoint's."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            diffs.append(f"{key}: checkpoint has {a!r}, config has {b!r}")
    if diffs:
        raise UserError(
            f"the checkpoint at {where} was written by an incompatible config ("
            + "; ".join(diffs[:6]) + (" ..." if len(diffs) > 6 else "")
            + "). Use a fresh --workdir, or restore the old config values.")


def flatten_meta(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_meta(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, tuple) else v
    return out


def process_barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
