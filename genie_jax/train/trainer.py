"""The training engine shared by every stage.

Flow of one run:
  config -> mesh + logical rules -> stage (model, loss, eval) -> optimizer
  abstract init (jax.eval_shape) -> NamedShardings from logical names -> sharded init or restore
  loop: grain batch (per host) -> global jax.Array -> jitted train_step (donated state)
        every log_every: fetch metrics, NaN check, console/TensorBoard
        every eval_every: held-out eval;  every checkpoint.every: async orbax save
  SIGTERM: save at the next step boundary and return cleanly.

Train state (a plain dict pytree, checkpointed whole):
  step, params, model_state (non-trainable collections), opt_state, rng, first_bad_step
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from genie_jax.data.loader import LoaderOptions, make_iterator
from genie_jax.errors import UserError
from genie_jax.media import write_png, write_text
from genie_jax.sharding import (batch_sharding, make_mesh, replicated, rules_from_config,
                                use_mesh)
from genie_jax.stages import get_stage
from genie_jax.train.checkpoint import Checkpointer, check_compatible, flatten_meta
from genie_jax.train.logger import RunLogger
from genie_jax.train.optim import make_optimizer

_STOP = threading.Event()


def request_stop(*_):
    """SIGTERM handler: finish the current step, checkpoint, exit cleanly."""
    _STOP.set()


class NonFiniteError(RuntimeError):
    pass


def strip_boxes(tree):
    """Replace flax Partitioned boxes by their values (no sharding constraint applied)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.Partitioned))


# ------------------------------------------------------------------------------------------
# Pure step functions (jitted once each in `Engine`).

def train_step(state: dict, batch: dict, frozen, *, stage, tx) -> tuple[dict, dict]:
    stage = stage.bind(frozen)
    step = state["step"]
    rng = jax.random.fold_in(state["rng"], step)

    def loss_fn(params):
        return stage.loss(params, state["model_state"], batch, rng)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"])
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    params, model_state, extra = stage.after_update(params, model_state)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step changes nothing but the step counter and first_bad_step: the state that
    # could be checkpointed stays the last good one.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = {
        "step": step + 1,
        "params": keep(params, state["params"]),
        "model_state": keep(model_state, state["model_state"]),
        "opt_state": keep(opt_state, state["opt_state"]),
        "rng": state["rng"],
        "first_bad_step": jnp.where((state["first_bad_step"] < 0) & ~finite, step,
                                    state["first_bad_step"]),
    }
    metrics = {**metrics, **extra, "loss": loss, "grad_norm": grad_norm}
    return new_state, metrics


def eval_step(state: dict, batch: dict, frozen, *, stage) -> dict:
    return stage.bind(frozen).eval_step(state["params"], state["model_state"], batch)


def visualize_step(state: dict, batch: dict, frozen, *, stage) -> dict:
    return stage.bind(frozen).visualize(state["params"], state["model_state"], batch)


# ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Engine:
    config: Any
    mesh: Any
    rules: Any
    stage: Any
    tx: Any
    schedule: Any
    abstract_state: Any
    state_shardings: Any
    batch_shardings: Any
    init_fn: Any
    step_fn: Any
    eval_fn: Any
    vis_fn: Any
    frozen: Any = None  # stage.frozen_params(): passed to every jitted fn, never checkpointed

    def context(self):
        return use_mesh(self.mesh, self.rules)

    def global_batch(self, local: dict) -> dict:
        """Assemble per-host numpy batches into global jax.Arrays sharded over the batch axes."""
        B = self.config.data.batch_size
        out = {}
        for k, sh in self.batch_shardings.items():
            arr = np.asarray(local[k])
            out[k] = jax.make_array_from_process_local_data(sh, arr, (B, *arr.shape[1:]))
        return out

    def meta(self) -> dict:
        cfg = self.config
        sections = {s: cfg[s].to_dict() for s in self.stage.shape_sections}
        return {"stage": self.stage.name, **flatten_meta(sections)}


def build_engine(config, devices=None) -> Engine:
    mesh = make_mesh(config.mesh.shape, devices)
    rules = rules_from_config(config.sharding.rules)
    stage = get_stage(config)
    tx, schedule = make_optimizer(config.optim, config.train.steps)
    B = config.data.batch_size
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if B % batch_ways or B % jax.process_count():
        raise UserError(f"data.batch_size={B} must divide evenly over the mesh's data*fsdp="
                        f"{batch_ways} devices and {jax.process_count()} processes")
    spec = stage.batch_spec(B)

    def init_state(rng):
        init_rng, train_rng = jax.random.split(rng)
        batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}
        variables = dict(stage.init(init_rng, batch))
        params = variables.pop("params")
        return {"step": jnp.zeros((), jnp.int32), "params": params, "model_state": variables,
                "opt_state": tx.init(params), "rng": train_rng,
                "first_bad_step": jnp.full((), -1, jnp.int32)}

    with use_mesh(mesh, rules):
        boxed = jax.eval_shape(init_state, jax.random.PRNGKey(0))
        state_shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
        abstract = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            strip_boxes(boxed), state_shardings)
        batch_shardings = {k: batch_sharding(mesh, len(s.shape)) for k, s in spec.items()}
        rep = replicated(mesh)
        frozen = stage.frozen_params(mesh, rules)
        frozen_shardings = jax.tree.map(lambda a: a.sharding, frozen)
        init_fn = jax.jit(lambda r: strip_boxes(init_state(r)), out_shardings=state_shardings)
        step_fn = jax.jit(functools.partial(train_step, stage=stage, tx=tx),
                          in_shardings=(state_shardings, batch_shardings, frozen_shardings),
                          out_shardings=(state_shardings, rep), donate_argnums=(0,))
        eval_fn = jax.jit(functools.partial(eval_step, stage=stage),
                          in_shardings=(state_shardings, batch_shardings, frozen_shardings),
                          out_shardings=rep)
        vis_fn = jax.jit(functools.partial(visualize_step, stage=stage), out_shardings=rep)
    return Engine(config, mesh, rules, stage, tx, schedule, abstract, state_shardings,
                  batch_shardings, init_fn, step_fn, eval_fn, vis_fn, frozen)


def loader_options(config, *, seed: int, shuffle: bool = True) -> LoaderOptions:
    d = config.data
    return LoaderOptions(num_frames=d.num_frames, local_batch=d.batch_size // jax.process_count(),
                         seed=seed, shuffle=shuffle, process_index=jax.process_index(),
                         process_count=jax.process_count(), worker_count=d.worker_count,
                         read_threads=d.read_threads, prefetch=d.prefetch)


def summarize_eval(sums: dict) -> dict:
    count = float(sums.pop("count"))
    out = {}
    for k, v in sums.items():
        v = np.asarray(v)
        if k.endswith("counts"):
            name = k[: -len("counts")]
            probs = v / max(v.sum(), 1)
            nz = probs[probs > 0]
            out[f"{name}usage"] = float(np.mean(v > 0))
            out[f"{name}perplexity"] = float(np.exp(-np.sum(nz * np.log(nz))))
        else:
            out[k] = float(v) / count
    return out


def _merge_earlier_segments(summary: dict, path: str, start: int) -> None:
    """A resumed run keeps the evaluations and training time of the segments before it (those
    that ended cleanly and wrote a summary at or before `start`)."""
    summary["train_seconds_all_segments"] = summary["train_seconds"]
    if start == 0 or not os.path.exists(path):
        return
    try:
        with open(path) as f:
            prev = json.load(f)
    except (OSError, ValueError):
        return
    if prev.get("step", start + 1) > start:  # from a later, lost segment: not ours to merge
        return
    seen = {h["step"] for h in summary["eval_history"]}
    earlier = [h for h in prev.get("eval_history", []) if h["step"] <= start and h["step"] not in seen]
    summary["eval_history"] = earlier + summary["eval_history"]
    summary["train_seconds_all_segments"] += prev.get("train_seconds_all_segments",
                                                      prev.get("train_seconds", 0.0))


def train(config, workdir: str) -> dict:
    """Train `config.stage` in `workdir`, resuming from its latest good checkpoint."""
    workdir = os.path.abspath(workdir)  # orbax (tensorstore) needs absolute paths
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    engine = build_engine(config)
    stage, tcfg = engine.stage, config.train
    total = tcfg.steps
    B, T = config.data.batch_size, config.data.num_frames

    train_iter = make_iterator(stage.train_source(), loader_options(config, seed=config.data.seed))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                        async_save=config.checkpoint.async_save)
    meta = engine.meta()
    logger = RunLogger(workdir, total, B * T, enabled=is_main)
    prev_handler = signal.signal(signal.SIGTERM, request_stop) \
        if threading.current_thread() is threading.main_thread() else None
    _STOP.clear()
    try:
        with engine.context():
            state, start = ckpt.restore_latest(engine.abstract_state, train_iter, meta,
                                               check_compatible)
            if state is None:
                state, start = engine.init_fn(jax.random.PRNGKey(config.seed)), 0
                if is_main:
                    write_text(os.path.join(workdir, "config.json"),
                           config.to_json_best_effort(indent=2))
            else:
                print(f"resumed from {ckpt.directory}/{start}", flush=True)
            eval_batches = _held_out_batches(engine, config)
            summary = _loop(engine, state, start, train_iter, eval_batches, ckpt, logger, meta,
                            workdir)
    finally:
        ckpt.close()
        logger.close()
        if prev_handler is not None:
            signal.signal(signal.SIGTERM, prev_handler)
    return summary


def _held_out_batches(engine: Engine, config) -> list[dict]:
    """A fixed set of held-out batches, read once and reused at every eval."""
    n = config.train.eval_batches
    if n <= 0:
        return []
    it = make_iterator(engine.stage.eval_source(),
                       loader_options(config, seed=config.data.seed + 1))
    return [engine.global_batch(next(it)) for _ in range(n)]


def _evaluate(engine: Engine, state, eval_batches) -> dict:
    sums = None
    for b in eval_batches:
        out = engine.eval_fn(state, b, engine.frozen)
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    return summarize_eval(jax.device_get(sums))


def _should_stop(step_done: int, at_log: bool, deadline: float | None) -> bool:
    local = _STOP.is_set() or (deadline is not None and at_log and time.time() > deadline)
    if jax.process_count() == 1:
        return local
    if not at_log:
        return False  # multi-host: agree only at log steps, to avoid a collective every step
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))


def _check_finite(state, metrics_host: dict) -> None:
    bad = int(jax.device_get(state["first_bad_step"]))
    if bad >= 0 or not np.isfinite(metrics_host.get("loss", 0.0)):
        raise NonFiniteError(
            f"loss or gradients became NaN/inf at step {bad if bad >= 0 else '?'}; stopping. "
            "No checkpoint was written after that step. Lower optim.lr, check the data, or "
            "raise optim.clip_norm.")


def _loop(engine: Engine, state, start: int, train_iter, eval_batches, ckpt: Checkpointer,
          logger: RunLogger, meta: dict, workdir: str) -> dict:
    config, stage, tcfg = engine.config, engine.stage, engine.config.train
    total, ck_every = tcfg.steps, config.checkpoint.every
    deadline = time.time() + 60 * tcfg.max_minutes if tcfg.max_minutes > 0 else None
    pending: list[dict] = []
    history: list[dict] = []
    last_eval: dict = {}
    preempted = False
    step = start
    t_start = time.perf_counter()
    logger.start(step)
    first = True
    while step < total:
        at_log = (step % tcfg.log_every == 0) and step > start
        if _should_stop(step, at_log, deadline):
            preempted = _STOP.is_set()
            print(f"{'SIGTERM' if preempted else 'time limit'}: saving step {step} and stopping",
                  flush=True)
            break
        local = next(train_iter)
        if first:
            stage.check_batch(local, config.data.batch_size // jax.process_count())
            first = False
        state, metrics = engine.step_fn(state, engine.global_batch(local), engine.frozen)
        pending.append(metrics)
        step += 1
        if step % tcfg.log_every == 0 or step == total:
            host = jax.device_get(pending)
            pending = []
            means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
            _check_finite(state, {"loss": host[-1]["loss"]})
            means["lr"] = float(engine.schedule(step - 1))
            rate = logger.progress(step, {k: means[k] for k in ("loss", "psnr") if k in means})
            logger.scalars(step, "train", {**means, **rate})
        if eval_batches and (step % tcfg.eval_every == 0 or step == total):
            last_eval = _evaluate(engine, state, eval_batches)
            history.append({"step": step, **last_eval})
            logger.scalars(step, "eval", last_eval)
            logger.images(step, jax.device_get(engine.vis_fn(state, eval_batches[0],
                                                             engine.frozen)))
            print(f"eval @ {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in last_eval.items()),
                  flush=True)
        if step % ck_every == 0 and step < total:
            _check_finite(state, {})
            ckpt.save(step, state, train_iter, meta)
    train_seconds = time.perf_counter() - t_start
    if step > start:
        _check_finite(state, {})
        ckpt.save(step, state, train_iter, meta, force=True)
    if eval_batches and (not history or history[-1]["step"] != step):
        # A run cut short (time limit, SIGTERM) or resumed at its end reports its final state.
        last_eval = _evaluate(engine, state, eval_batches)
        history.append({"step": step, **last_eval})
        logger.scalars(step, "eval", last_eval)
    ckpt.wait()
    logger.flush()
    summary = {"stage": stage.name, "step": step, "total_steps": total, "preempted": preempted,
               "stopped_early": step < total, "train_seconds": train_seconds,
               "steps_per_s": (step - start) / max(train_seconds, 1e-9),
               "eval": last_eval, "eval_history": history}
    _merge_earlier_segments(summary, os.path.join(workdir, "summary.json"), start)
    # Every process joins the (collective) image computation; only process 0 writes.
    images = (jax.device_get(engine.vis_fn(state, eval_batches[0], engine.frozen))
              if eval_batches else {})
    if jax.process_index() == 0:
        write_text(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))
        for name, img in images.items():
            write_png(os.path.join(workdir, f"{name}.png"), np.asarray(img))
    return summary
