"""The training engine shared by every stage.

Flow of one run:
  config -> mesh + logical rules -> stage (model, loss, eval) -> optimizer
  abstract init (jax.eval_shape) -> NamedShardings from logical names -> sharded init or restore
  frozen params of other stages: abstract shapes at build time, read once by `train`, then
        passed to every jitted step as an argument (never checkpointed)
  loop: grain batch (per host) -> global jax.Array -> jitted train_step (donated state)
        every log_every: fetch metrics, NaN check, console/TensorBoard
        every eval_every: held-out eval;  every checkpoint.every: async orbax save
  finish (end, SIGTERM, time limit): save and evaluate the final step unless that step already
        was (after a SIGTERM the save is committed first), write summary.json and the final images.
  The loop keeps at most one step queued behind the running one, so a SIGTERM is acted on within
  about a step.
  A SIGTERM that arrives before the handler is installed (while imports and the engine are being
  built) ends the process at once with the default action (exit -15); nothing is lost, since no
  step has run yet since the last checkpoint.

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
from genie_jax.metrics import codebook_usage
from genie_jax.runs import Checkpointer, stage_meta, strip_boxes
from genie_jax.sharding import (batch_sharding, make_mesh, replicated, rules_from_config,
                                use_mesh)
from genie_jax.stages import get_stage
from genie_jax.stages.base import restore_frozen
from genie_jax.train.logger import RunLogger
from genie_jax.train.optim import make_optimizer

_STOP = threading.Event()


def request_stop(*_):
    """SIGTERM handler: finish the current step, checkpoint, exit cleanly."""
    _STOP.set()


class NonFiniteError(RuntimeError):
    pass


def due(step: int, every: int, total: int) -> bool:
    """Whether a periodic action (log, eval, checkpoint) runs after `step` steps: every `every`
    steps and at the last step; never when every <= 0."""
    return every > 0 and (step % every == 0 or step == total)


# ------------------------------------------------------------------------------------------
# Pure step functions (jitted once each in `Engine`).

def split_microbatches(batch: dict, k: int) -> dict:
    """[B, ...] -> [k, B/k, ...]. Microbatch j takes rows j, j+k, j+2k, ...: a device holding a
    contiguous block of rows holds its share of every microbatch, so no data moves."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1),
                        batch)


def loss_and_grads(stage, params, frozen, model_state, batch, rng, microbatches: int = 1):
    """-> ((loss, (metrics, model_state)), grads): one pass over the batch, or the mean over
    `microbatches` equal slices accumulated in a scan (the activations of one slice live at a
    time; model_state, e.g. VQ statistics, is carried from slice to slice, so VQ code ages
    count slices: loss.restart_dead_after is then in slices, not steps)."""
    grad_fn = jax.value_and_grad(
        lambda p, ms, b, r: stage.loss(p, frozen, ms, b, r), has_aux=True)
    if microbatches == 1:
        return grad_fn(params, model_state, batch, rng)

    def body(carry, xs):
        grads_acc, ms = carry
        mbatch, i = xs
        (loss, (metrics, ms)), grads = grad_fn(params, ms, mbatch, jax.random.fold_in(rng, i))
        return (jax.tree.map(jnp.add, grads_acc, grads), ms), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (grads, model_state), (losses, metrics) = jax.lax.scan(
        body, (zeros, model_state),
        (split_microbatches(batch, microbatches), jnp.arange(microbatches)))
    mean = lambda x: jnp.mean(x, axis=0)  # noqa: E731
    grads = jax.tree.map(lambda g: g / microbatches, grads)
    return (mean(losses), (jax.tree.map(mean, metrics), model_state)), grads


def train_step(state: dict, batch: dict, frozen, *, stage, tx,
               microbatches: int = 1) -> tuple[dict, dict]:
    step = state["step"]
    rng = jax.random.fold_in(state["rng"], step)
    (loss, (metrics, model_state)), grads = loss_and_grads(
        stage, state["params"], frozen, state["model_state"], batch, rng, microbatches)
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
    return stage.eval_step(state["params"], frozen, state["model_state"], batch)


def visualize_step(state: dict, batch: dict, frozen, *, stage) -> dict:
    return stage.visualize(state["params"], frozen, state["model_state"], batch)


# ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Engine:
    """Everything a run needs, built from the config alone (nothing is read from disk)."""
    config: Any
    mesh: Any
    rules: Any
    stage: Any
    tx: Any
    schedule: Any
    abstract_state: Any
    state_shardings: Any
    batch_shardings: Any
    eval_batch_shardings: Any  # held-out batches (the stage's eval_batch_spec)
    frozen_abstract: Any  # ShapeDtypeStructs (with shardings) of the stage's frozen inputs
    init_fn: Any
    step_fn: Any
    eval_fn: Any
    vis_fn: Any

    def context(self):
        return use_mesh(self.mesh, self.rules)

    def global_batch(self, local: dict, shardings: dict | None = None) -> dict:
        """Assemble per-host numpy batches into global jax.Arrays sharded over the batch axes
        (a training batch, or with `shardings=eval_batch_shardings` a held-out one)."""
        B = self.config.data.batch_size
        out = {}
        for k, sh in (shardings or self.batch_shardings).items():
            arr = np.asarray(local[k])
            out[k] = jax.make_array_from_process_local_data(sh, arr, (B, *arr.shape[1:]))
        return out

    def meta(self) -> dict:
        return stage_meta(self.stage.name,
                          {s: self.config[s] for s in self.stage.shape_sections})

    def load_frozen(self) -> dict:
        """Read the frozen inputs' params onto their shardings (once per run); the stage may
        refuse the steps they came from (a token cache of other steps)."""
        frozen, steps = restore_frozen(self.stage.frozen_inputs(), self.frozen_abstract)
        self.stage.check_frozen(steps)
        return frozen

    def abstract_batch(self) -> dict:
        spec = self.stage.batch_spec(self.config.data.batch_size)
        return {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.batch_shardings[k])
                for k, s in spec.items()}

    def param_count(self) -> int:
        return int(sum(np.prod(a.shape) for a in jax.tree.leaves(self.abstract_state["params"])))


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
    k = int(config.train.get("microbatches", 1))
    if k < 1 or B % (k * batch_ways):
        raise UserError(f"train.microbatches={k} must be >= 1 and split data.batch_size={B} "
                        f"into equal slices over the mesh's data*fsdp={batch_ways} devices")
    spec = stage.batch_spec(B)

    def init_state(rng):
        init_rng, train_rng = jax.random.split(rng)
        batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}
        variables = dict(stage.init(init_rng, batch))
        params = variables.pop("params")
        return {"step": jnp.zeros((), jnp.int32), "params": params, "model_state": variables,
                "opt_state": tx.init(params), "rng": train_rng,
                "first_bad_step": jnp.full((), -1, jnp.int32)}

    key = jax.random.PRNGKey(0)  # made off the mesh: a TPU topology mesh has no device to run on
    with use_mesh(mesh, rules):
        boxed = jax.eval_shape(init_state, key)
        state_shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
        abstract = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            strip_boxes(boxed), state_shardings)
        batch_shardings = {k: batch_sharding(mesh, len(s.shape)) for k, s in spec.items()}
        eval_batch_shardings = {k: batch_sharding(mesh, len(s.shape))
                                for k, s in stage.eval_batch_spec(B).items()}
        rep = replicated(mesh)
        frozen_abstract = {name: fi.abstract(mesh, rules)
                           for name, fi in stage.frozen_inputs().items()}
        frozen_shardings = jax.tree.map(lambda a: a.sharding, frozen_abstract)
        init_fn = jax.jit(lambda r: strip_boxes(init_state(r)), out_shardings=state_shardings)
        step_fn = jax.jit(functools.partial(train_step, stage=stage, tx=tx, microbatches=k),
                          in_shardings=(state_shardings, batch_shardings, frozen_shardings),
                          out_shardings=(state_shardings, rep), donate_argnums=(0,))
        eval_fn = jax.jit(functools.partial(eval_step, stage=stage),
                          in_shardings=(state_shardings, eval_batch_shardings, frozen_shardings),
                          out_shardings=rep)
        vis_fn = jax.jit(functools.partial(visualize_step, stage=stage), out_shardings=rep)
    # The logged learning rate: one compiled program, not a dozen eager ops (each its own
    # compile in a fresh process).
    schedule = jax.jit(schedule)
    return Engine(config, mesh, rules, stage, tx, schedule, abstract, state_shardings,
                  batch_shardings, eval_batch_shardings, frozen_abstract, init_fn, step_fn, eval_fn, vis_fn)


def loader_options(config, *, seed: int, shuffle: bool = True) -> LoaderOptions:
    d = config.data
    return LoaderOptions(num_frames=d.num_frames, local_batch=d.batch_size // jax.process_count(),
                         seed=seed, shuffle=shuffle, process_index=jax.process_index(),
                         process_count=jax.process_count(), worker_count=d.worker_count,
                         read_threads=d.read_threads, prefetch=d.prefetch)


def summarize_eval(sums: dict) -> dict:
    """Summed per-batch eval outputs -> means; a `*counts` entry (codes chosen, summed) becomes
    `*usage` and `*perplexity` (metrics.codebook_usage)."""
    count = float(sums.pop("count"))
    out = {}
    for k, v in sums.items():
        if k.endswith("counts"):
            name = k[: -len("counts")]
            usage = codebook_usage(v)
            out[f"{name}usage"] = usage["usage"]
            out[f"{name}perplexity"] = usage["perplexity"]
        else:
            out[k] = float(v) / count
    return out


class LogWindow:
    """Train metrics of the steps since the last log record, kept on device until a log step.

    Saved with every checkpoint (`to_json`), so a run resumed from a checkpoint that is not a log
    step averages the same steps, in the same dtype, as an uninterrupted run would."""

    def __init__(self, saved: dict | None = None):
        self.items: list[dict] = []
        for rec in (saved or {}).get("metrics", []):
            self.items.append({k: np.asarray(v, dtype=dt) for k, (v, dt) in rec.items()})

    def add(self, metrics: dict) -> None:
        self.items.append(metrics)

    def take_means(self) -> tuple[dict, dict]:
        """Fetch and clear -> (mean per metric, the last step's metrics)."""
        host, self.items = jax.device_get(self.items), []
        return {k: float(np.mean([m[k] for m in host])) for k in host[0]}, host[-1]

    def to_json(self) -> dict:
        self.items = jax.device_get(self.items)  # at checkpoint steps only
        return {"metrics": [{k: [np.asarray(v).item(), str(np.asarray(v).dtype)]
                             for k, v in m.items()} for m in self.items]}


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
    total = config.train.steps
    B, T = config.data.batch_size, config.data.num_frames

    train_iter = make_iterator(engine.stage.train_source(),
                               loader_options(config, seed=config.data.seed))
    ckpt = Checkpointer(workdir, keep=config.checkpoint.keep,
                        async_save=config.checkpoint.async_save)
    meta = engine.meta()
    logger = RunLogger(workdir, total, B * T, enabled=is_main)
    prev_handler = signal.signal(signal.SIGTERM, request_stop) \
        if threading.current_thread() is threading.main_thread() else None
    _STOP.clear()
    try:
        with engine.context():
            frozen = engine.load_frozen()
            state, start, window = ckpt.restore_latest(engine.abstract_state, train_iter, meta)
            if state is None:
                state, start = engine.init_fn(jax.random.PRNGKey(config.seed)), 0
                if is_main:
                    write_text(os.path.join(workdir, "config.json"),
                               config.to_json_best_effort(indent=2))
            else:
                print(f"resumed from {ckpt.directory}/{start}", flush=True)
            logger.resume(start)
            if is_main:
                print(f"{engine.stage.name}: {engine.param_count():,} trainable parameters",
                      flush=True)
            eval_batches = _held_out_batches(engine, config)
            summary = _loop(engine, state, start, frozen, train_iter, eval_batches, ckpt, logger,
                            meta, LogWindow(window), workdir)
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
    return [engine.global_batch(next(it), engine.eval_batch_shardings) for _ in range(n)]


def _evaluate(engine: Engine, state, frozen, eval_batches) -> dict:
    sums = None
    for b in eval_batches:
        out = engine.eval_fn(state, b, frozen)
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    return summarize_eval(jax.device_get(sums))


def _should_stop(at_log: bool, deadline: float | None) -> bool:
    local = _STOP.is_set() or (deadline is not None and at_log and time.time() > deadline)
    if jax.process_count() == 1:
        return local
    if not at_log:
        return False  # multi-host: agree only at log steps, to avoid a collective every step
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))


def _check_finite(state, last_loss: float = 0.0) -> None:
    bad = int(jax.device_get(state["first_bad_step"]))
    if bad >= 0 or not np.isfinite(last_loss):
        raise NonFiniteError(
            f"loss or gradients became NaN/inf at step {bad if bad >= 0 else '?'}; stopping. "
            "No checkpoint was written after that step. Lower optim.lr, check the data, or "
            "raise optim.clip_norm.")


def _loop(engine: Engine, state, start: int, frozen, train_iter, eval_batches,
          ckpt: Checkpointer, logger: RunLogger, meta: dict, window: LogWindow,
          workdir: str) -> dict:
    config, stage, tcfg = engine.config, engine.stage, engine.config.train
    total, ck_every = tcfg.steps, config.checkpoint.every
    deadline = time.time() + 60 * tcfg.max_minutes if tcfg.max_minutes > 0 else None
    history: list[dict] = []
    last_eval: dict = {}
    images: dict = {}
    saved_step = start if start > 0 else None  # the step on disk now
    preempted = False
    step = start
    in_flight = None  # the previous step's loss: the loop waits for it (below)
    t_start = time.perf_counter()
    logger.start(step)

    def save(step):
        nonlocal saved_step
        _check_finite(state)
        ckpt.save(step, state, train_iter, meta, window.to_json())
        saved_step = step

    def evaluate(step, log=True):
        nonlocal last_eval, images
        last_eval = _evaluate(engine, state, frozen, eval_batches)
        history.append({"step": step, **last_eval})
        images = jax.device_get(engine.vis_fn(state, eval_batches[0], frozen))
        if log:
            logger.scalars(step, "eval", last_eval)
            logger.images(step, images)
        return last_eval

    while step < total:
        at_log = step > start and step % tcfg.log_every == 0
        if _should_stop(at_log, deadline):
            preempted = _STOP.is_set()
            print(f"{'SIGTERM' if preempted else 'time limit'}: saving step {step} and stopping",
                  flush=True)
            break
        local = next(train_iter)
        if step == start:
            stage.check_batch(local, config.data.batch_size // jax.process_count())
        state, metrics = engine.step_fn(state, engine.global_batch(local), frozen)
        window.add(metrics)
        # At most one step queued behind the running one. Without this wait the loop ran up to
        # 8 steps ahead of the device, and a SIGTERM waited for them before its save (quickstart
        # tokenizer: checkpoint committed 4.9 s after the signal, against 1.2 s with the wait).
        # It waits for completion only; nothing is transferred to the host.
        if in_flight is not None:
            jax.block_until_ready(in_flight)
        in_flight = metrics["loss"]
        step += 1
        # Host work happens only at log, eval and checkpoint steps; the transfers it makes are
        # allowed explicitly, so a guard around the loop (tests/train/test_trainer.py) catches
        # any host sync that creeps into the other steps.
        with jax.transfer_guard("allow"):
            if due(step, tcfg.log_every, total):
                means, last = window.take_means()
                _check_finite(state, float(last["loss"]))
                means["lr"] = float(engine.schedule(step - 1))
                rate = logger.progress(step, {k: means[k] for k in ("loss", "psnr") if k in means})
                logger.scalars(step, "train", {**means, **rate})
            if eval_batches and due(step, tcfg.eval_every, total):
                ev = evaluate(step)
                print(f"eval @ {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in ev.items()),
                      flush=True)
            if due(step, ck_every, total):
                save(step)
    train_seconds = time.perf_counter() - t_start

    # The one finish path (end, SIGTERM, time limit, or a resume of a finished run): the final
    # step is saved and evaluated once, whatever the loop already did at that step.
    if step > start and saved_step != step:
        save(step)  # (the finish path runs outside any guard: it is host work)
    if preempted:
        ckpt.wait()  # committed before the final eval: a SIGKILL after the grace period
                     # then loses nothing
    if eval_batches and (not history or history[-1]["step"] != step):
        # A run cut short reports its final state in summary.json but not in metrics.jsonl, so
        # that file reads the same once the run is resumed as an uninterrupted run's.
        evaluate(step, log=start < step == total)
    ckpt.wait()
    logger.flush()
    summary = {"stage": stage.name, "step": step, "total_steps": total, "preempted": preempted,
               "stopped_early": step < total, "train_seconds": train_seconds,
               "steps_per_s": (step - start) / max(train_seconds, 1e-9),
               "param_count": engine.param_count(),
               "eval": last_eval, "eval_history": history}
    _merge_earlier_segments(summary, os.path.join(workdir, "summary.json"), start)
    if jax.process_index() == 0:
        write_text(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))
        for name, img in images.items():
            write_png(os.path.join(workdir, f"{name}.png"), np.asarray(img))
    return summary
