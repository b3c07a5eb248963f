"""What a stage contributes to the one trainer: its model's init, loss, evaluation and images.

A stage holds no arrays. The traced methods are pure functions of their arguments:
  loss(params, frozen, model_state, batch, rng), eval_step(params, frozen, model_state, batch),
  visualize(params, frozen, model_state, batch), init(rng, batch), after_update(params, model_state)
where `frozen` holds the params of other, finished stages this one builds on (e.g. the dynamics
stage's tokenizer): the trainer passes them to its jitted steps as arguments, sharded, and never
checkpoints them. The host side says which those are (`frozen_inputs`: run folder, expected meta,
abstract shapes), so an engine can be built and its steps compiled with nothing on disk;
`load_frozen` reads them (the trainer once per run, the sampler once per load).
Host-side methods: train_source, eval_source, batch_spec (training batches), eval_batch_spec
(held-out batches; the same unless training reads something else, e.g. the dynamics stage's
token cache), check_batch, frozen_inputs, check_frozen (the steps `restore_frozen` restored).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from genie_jax.data.sources import open_episode_source
from genie_jax.errors import UserError
from genie_jax.runs import Run, abstract_variables

Batch = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class FrozenInput:
    """Params of another finished run that a stage uses but does not train."""
    what: str                 # the config key naming the run folder, for error messages
    workdir: str
    meta: dict                # the checkpoint meta it must carry (runs.stage_meta)
    init: Callable            # init(*init_args) -> params, for abstract shapes
    init_args: tuple

    def abstract(self, mesh=None, rules=None):
        """ShapeDtypeStructs of the params, sharded by their logical names over `mesh`."""
        return abstract_variables(self.init, *self.init_args, mesh=mesh, rules=rules)


def restore_frozen(inputs: dict[str, FrozenInput], abstract: dict) -> tuple[dict, dict]:
    """Read each frozen input's params onto its abstract shapes and shardings (host side).
    -> (params by name, the checkpoint step each came from)."""
    params, steps = {}, {}
    for name, fi in inputs.items():
        params[name], steps[name] = Run(fi.workdir, fi.what).restore(abstract[name],
                                                                     expect_meta=fi.meta)
    return params, steps


def load_frozen(inputs: dict[str, FrozenInput], abstract: dict) -> dict:
    """restore_frozen's params."""
    return restore_frozen(inputs, abstract)[0]


class Stage:
    name: str = "base"
    # Config sections whose values fix parameter shapes; stored with each checkpoint.
    shape_sections: tuple[str, ...] = ("model",)

    def __init__(self, config):
        self.config = config

    # ---- host side -------------------------------------------------------------------------
    def train_source(self):
        """An episode source (the loader enumerates its windows) or a source of ready windows
        (with a `windows(length, stride)` method, e.g. data/token_cache.TokenCache)."""
        return open_episode_source(self.config.data, "train")

    def eval_source(self):
        return open_episode_source(self.config.data, self.config.data.eval_split)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        raise NotImplementedError

    def eval_batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        return self.batch_spec(batch_size)

    def check_batch(self, batch: Batch, batch_size: int) -> None:
        """Fail early, on the host, with the config keys to look at."""
        for key, spec in self.batch_spec(batch_size).items():
            if key not in batch:
                raise UserError(f"the data source yields no {key!r} (data.source={self.config.data.source!r})")
            arr = np.asarray(batch[key])
            if tuple(arr.shape) != tuple(spec.shape) or arr.dtype != spec.dtype:
                raise UserError(
                    f"data gives {key} of shape {tuple(arr.shape)} {arr.dtype}, but the model "
                    f"expects {tuple(spec.shape)} {np.dtype(spec.dtype)}; check data.resolution, "
                    f"data.num_frames, data.batch_size and model.image_size/model.channels")

    def frozen_inputs(self) -> dict[str, FrozenInput]:
        """The finished runs whose params reach the traced methods as `frozen` (none here)."""
        return {}

    def check_frozen(self, steps: dict[str, int]) -> None:
        """Refuse frozen params from steps this run cannot use (UserError); by default any."""

    # ---- traced ----------------------------------------------------------------------------
    def init(self, rng: jax.Array, batch: Batch) -> dict:
        raise NotImplementedError

    def loss(self, params, frozen, model_state, batch: Batch, rng: jax.Array):
        """-> (scalar loss, (metrics dict of scalars, new model_state))."""
        raise NotImplementedError

    def after_update(self, params, model_state):
        """Hook after the optimizer update (e.g. dead-code restart). -> (params, model_state, metrics)."""
        return params, model_state, {}

    def eval_step(self, params, frozen, model_state, batch: Batch) -> dict:
        """Per-batch metric sums plus a `count`; the trainer adds batches and divides."""
        raise NotImplementedError

    def visualize(self, params, frozen, model_state, batch: Batch) -> dict[str, jax.Array]:
        """Images (uint8 [H, W, 3]) to log at eval time."""
        return {}
