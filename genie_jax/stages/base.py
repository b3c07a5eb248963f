"""What a stage contributes to the trainer. Everything here is traced inside jit except
`train_source`/`eval_source`/`check_batch`/`meta`, which run on the host."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from genie_jax.data.sources import open_episode_source
from genie_jax.errors import UserError

Batch = dict[str, Any]


class Stage:
    name: str = "base"
    # Config sections whose values fix parameter shapes; stored with each checkpoint.
    shape_sections: tuple[str, ...] = ("model",)

    def __init__(self, config):
        self.config = config

    # ---- host side -------------------------------------------------------------------------
    def train_source(self):
        return open_episode_source(self.config.data, "train")

    def eval_source(self):
        return open_episode_source(self.config.data, self.config.data.eval_split)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        raise NotImplementedError

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

    def frozen_params(self, mesh=None, rules=None) -> dict:
        """Host side, once per run: pretrained params this stage uses but does not train (e.g. a
        frozen tokenizer), placed on `mesh` by their logical names. Never checkpointed."""
        return {}

    def bind(self, frozen) -> "Stage":
        """The stage to use inside jitted functions, given `frozen` (jit arguments)."""
        return self

    # ---- traced ----------------------------------------------------------------------------
    def init(self, rng: jax.Array, batch: Batch) -> dict:
        raise NotImplementedError

    def loss(self, params, model_state, batch: Batch, rng: jax.Array):
        """-> (scalar loss, (metrics dict of scalars, new model_state))."""
        raise NotImplementedError

    def after_update(self, params, model_state):
        """Hook after the optimizer update (e.g. dead-code restart). -> (params, model_state, metrics)."""
        return params, model_state, {}

    def eval_step(self, params, model_state, batch: Batch) -> dict:
        """Per-batch metric sums plus a `count`; the trainer adds batches and divides."""
        raise NotImplementedError

    def visualize(self, params, model_state, batch: Batch) -> dict[str, jax.Array]:
        """Images (uint8 [H, W, 3]) to log at eval time."""
        return {}
