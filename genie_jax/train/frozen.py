"""Load the *params only* of another run's checkpoint (a frozen tokenizer or LAM).

The trainer checkpoints `state` = {step, params, model_state, opt_state, rng, first_bad_step}.
A stage that uses a pretrained model needs only `state['params']`: we restore that subtree
with orbax partial restore, so no optimizer state is built or read, and the arrays land directly
on the shardings given (from the model's logical axis names) or on one device.

The checkpoint's meta (stage name and shape config) is checked against what the caller expects,
so a wrong workdir fails with a message naming the differing config values. Unreadable newest
steps are skipped in favour of older ones, like the trainer does.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import linen as nn

from genie_jax.errors import UserError
from genie_jax.train.checkpoint import check_compatible, flatten_meta


def checkpoint_steps(workdir: str) -> list[int]:
    """Finished steps under WORKDIR/checkpoints (orbax renames a step folder when complete)."""
    d = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def read_run_config(workdir: str):
    """The ml_collections config a run wrote to WORKDIR/config.json."""
    import ml_collections
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise UserError(f"{path} does not exist; is {workdir!r} a genie-jax run folder?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def expected_meta(stage: str, sections: dict) -> dict:
    """The meta a checkpoint of `stage` with these shape sections carries (see Engine.meta)."""
    return {"stage": stage, **flatten_meta(
        {k: (v.to_dict() if hasattr(v, "to_dict") else dict(v)) for k, v in sections.items()})}


def abstract_params(model: nn.Module, *init_args, mesh=None, rules=None, rngs=None,
                    **init_kwargs) -> Any:
    """ShapeDtypeStructs (with shardings) of `model`'s params, without allocating them."""
    rngs = rngs or {"params": jax.random.PRNGKey(0), "vq": jax.random.PRNGKey(0),
                    "dropout": jax.random.PRNGKey(0)}

    def init(*args):
        return model.init(rngs, *args, **init_kwargs)["params"]

    if mesh is not None:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            boxed = jax.eval_shape(init, *init_args)
            shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
    else:
        boxed = jax.eval_shape(init, *init_args)
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: one, boxed,
                                 is_leaf=lambda x: isinstance(x, nn.Partitioned))
    unboxed = jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, boxed,
                           is_leaf=lambda x: isinstance(x, nn.Partitioned))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        unboxed, shardings)


def _read_meta(step_dir: str) -> dict:
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ck:
        return dict(ck.restore(os.path.join(step_dir, "meta")))


def load_params(workdir: str, abstract: Any, meta: dict | None = None,
                step: int | None = None, what: str = "checkpoint") -> tuple[Any, int]:
    """Restore only `state['params']` of WORKDIR's newest readable step (or `step`).

    abstract: ShapeDtypeStructs with shardings (see `abstract_params`).
    meta: the expected checkpoint meta (see `expected_meta`); None skips the check.
    -> (params, step).
    """
    steps = checkpoint_steps(workdir)
    if step is not None:
        if step not in steps:
            raise UserError(f"{what}: no step {step} under {workdir}/checkpoints (have {steps})")
        steps = [step]
    if not steps:
        raise UserError(f"{what}: no checkpoint under {workdir!r}/checkpoints; train it first "
                        f"or fix the workdir in the config")
    item = {"params": abstract}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
    last_err = None
    for s in reversed(steps):
        step_dir = os.path.join(os.path.abspath(workdir), "checkpoints", str(s))  # orbax: absolute
        try:
            saved = _read_meta(step_dir)
        except Exception as e:  # noqa: BLE001 - unreadable: try an older step
            last_err = e
            continue
        if meta is not None:
            check_compatible(saved, meta, f"{step_dir} ({what})")
        try:
            with ocp.PyTreeCheckpointer() as ck:
                out = ck.restore(os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
                    item=item, restore_args=restore_args, partial_restore=True))
        except Exception as e:  # noqa: BLE001
            logging.warning("%s: step %d unreadable (%s); trying an older one", what, s, e)
            last_err = e
            continue
        return out["params"], s
    raise UserError(f"{what}: no readable checkpoint under {workdir}/checkpoints "
                    f"({type(last_err).__name__}: {str(last_err).splitlines()[0][:200]})")
