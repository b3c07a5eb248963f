"""The trainer in-process on the test-size tokenizer: pulse, cadences, the one finish path, stops
that land on a checkpoint step, resumed logs, and no host transfer inside the step loop."""
import json
import os

import jax
import numpy as np
import pytest

from genie_jax.runs import Checkpointer, Run
from genie_jax.train import trainer
from genie_jax.train.trainer import build_engine, due, train
from tests.stages.helpers import test_config as _cfg

TIMING_KEYS = {"steps_per_s", "frames_per_s"}


def _cfg_steps(steps=12, log_every=2, ck_every=4, eval_every=6):
    c = _cfg("tokenizer")
    c.train.steps, c.train.log_every, c.train.eval_every = steps, log_every, eval_every
    c.checkpoint.every = ck_every
    c.checkpoint.async_save = False
    return c


def _jsonl(wd):
    """metrics.jsonl as written, without the wall-clock rates."""
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in f]


def test_due_runs_every_n_and_at_the_end():
    assert [s for s in range(1, 11) if due(s, 4, 10)] == [4, 8, 10]
    assert [s for s in range(1, 9) if due(s, 4, 8)] == [4, 8]
    assert not any(due(s, 0, 10) for s in range(1, 10)) and due(10, 1, 10)


def test_tokenizer_has_a_pulse_in_process(tmp_path):
    wd = str(tmp_path / "run")
    summary = train(_cfg_steps(), wd)
    assert summary["step"] == 12 and not summary["preempted"] and summary["param_count"] > 0
    assert set(summary["eval"]) >= {"psnr", "ssim", "code_usage", "code_perplexity"}
    recs = _jsonl(wd)
    train_recs = {r["step"]: r for r in recs if r["split"] == "train"}
    assert sorted(train_recs) == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in recs if r["split"] == "eval"] == [6, 12]  # one eval per step
    assert train_recs[12]["loss"] < train_recs[2]["loss"]  # it learns
    assert Run(wd).steps() == [4, 8, 12]
    assert os.path.exists(os.path.join(wd, "reconstructions.png"))
    # Resumed at its end: trains no further, saves nothing, logs nothing new.
    again = train(_cfg_steps(), wd)
    assert again["step"] == 12 and again["eval"] == summary["eval"]
    assert len(_jsonl(wd)) == len(recs) and Run(wd).steps() == [4, 8, 12]


def _stop_after_saving(monkeypatch, at_step):
    """Make the run stop as if SIGTERM arrived right after the checkpoint of `at_step`."""
    saves = []
    real_save = Checkpointer.save

    def save(self, step, *a, **k):
        saves.append(step)
        real_save(self, step, *a, **k)
        if step == at_step:
            trainer.request_stop()

    monkeypatch.setattr(Checkpointer, "save", save)
    return saves


def test_sigterm_on_a_checkpoint_step_saves_once_and_resumes_to_the_same_log(tmp_path,
                                                                           monkeypatch):
    # checkpoint.every (3) is not a multiple of log_every (2): the checkpoint at step 3 falls in
    # the middle of a log window.
    cfg = dict(steps=12, log_every=2, ck_every=3, eval_every=6)
    ref = str(tmp_path / "ref")
    train(_cfg_steps(**cfg), ref)
    wd = str(tmp_path / "stopped")
    saves = _stop_after_saving(monkeypatch, at_step=3)
    first = train(_cfg_steps(**cfg), wd)
    assert first["preempted"] and first["step"] == 3 and saves == [3]  # saved once, no crash
    monkeypatch.undo()
    resumed = train(_cfg_steps(**cfg), wd)
    assert resumed["step"] == 12
    assert _jsonl(wd) == _jsonl(ref)  # the step-4 record averages steps 3 and 4 in both
    assert [h["step"] for h in resumed["eval_history"]] == [3, 6, 12]


def test_time_limit_on_a_checkpoint_step_saves_once(tmp_path, monkeypatch):
    # The time limit is checked at log steps; here every log step is also a checkpoint step.
    c = _cfg_steps(steps=12, log_every=4, ck_every=4)
    c.train.max_minutes = 1e-9
    saves = []
    real_save = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save",
                        lambda self, step, *a, **k: (saves.append(step),
                                                     real_save(self, step, *a, **k)))
    summary = train(c, str(tmp_path / "run"))
    assert summary["stopped_early"] and not summary["preempted"]
    assert summary["step"] == 4 and saves == [4]


def test_step_loop_makes_no_host_transfer(tmp_path, monkeypatch):
    """The real loop under jax.transfer_guard('disallow'): between log, eval and checkpoint steps
    it only feeds batches to the jitted step, so a host sync added there (a float(loss) every
    step, a numpy array passed to the step) fails this test."""
    real_loop = trainer._loop

    def guarded(*a, **k):
        with jax.transfer_guard("disallow"):
            return real_loop(*a, **k)

    monkeypatch.setattr(trainer, "_loop", guarded)
    summary = train(_cfg_steps(steps=8, log_every=4, ck_every=8, eval_every=8), str(tmp_path))
    assert summary["step"] == 8 and np.isfinite(summary["eval"]["psnr"])


def test_log_window_round_trips_dtypes():
    w = trainer.LogWindow()
    w.add({"loss": np.float32(1.25), "codes_restarted": np.int32(3)})
    w.add({"loss": np.float32(0.1), "codes_restarted": np.int32(0)})
    restored = trainer.LogWindow(json.loads(json.dumps(w.to_json())))
    a, _ = w.take_means()
    b, _ = restored.take_means()
    assert a == b and a["loss"] == float(np.mean([np.float32(1.25), np.float32(0.1)]))


def test_dynamics_engine_builds_and_compiles_with_nothing_on_disk(tmp_path):
    cfg = _cfg("dynamics", f"size=test,tokenizer={tmp_path}/none,lam={tmp_path}/none")
    engine = build_engine(cfg)
    assert set(engine.frozen_abstract) == {"tokenizer", "lam"}
    with engine.context():
        compiled = engine.step_fn.lower(engine.abstract_state, engine.abstract_batch(),
                                        engine.frozen_abstract).compile()
    assert compiled.cost_analysis() is not None
    assert not os.path.exists(f"{tmp_path}/none")


def test_tokenizer_trains_on_arrayrecord_shards(tmp_path):
    from tests.data.helpers import write_tagged
    data = str(tmp_path / "data")
    write_tagged(data, [16] * 8, hw=16, fractions="0.5,0.5,0")
    c = _cfg_steps(steps=4, log_every=2, ck_every=4, eval_every=4)
    c.data.source, c.data.dir = "arrayrecord", data
    summary = train(c, str(tmp_path / "run"))
    assert summary["step"] == 4
    assert summary["eval"]["psnr"] > 0 and summary["eval"]["code_usage"] > 0


def test_gradient_accumulation_equals_the_full_batch_step():
    """Two microbatches of 4 give the update of one batch of 8 (the tokenizer's loss is a mean
    over the batch and, at dropout 0, does not depend on the rng)."""
    from genie_jax.data.loader import make_iterator
    from genie_jax.train.trainer import loader_options
    out = {}
    for k in (1, 2):
        c = _cfg_steps()
        c.train.microbatches = k
        c.loss.restart_dead_after = 1000  # code ages count slices (see loss_and_grads)
        engine = build_engine(c)
        it = make_iterator(engine.stage.train_source(), loader_options(c, seed=0))
        with engine.context():
            state = engine.init_fn(jax.random.PRNGKey(0))
            for _ in range(2):
                state, m = engine.step_fn(state, engine.global_batch(next(it)), {})
            out[k] = jax.device_get((state["params"], m))
    (p1, m1), (p2, m2) = out[1], out[2]
    np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m2["grad_norm"], m1["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        # Adam normalises updates: float noise in near-zero gradients shows up at ~lr * 1e-2.
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5)


def test_microbatches_must_split_the_batch():
    from genie_jax.errors import UserError
    c = _cfg_steps()
    c.train.microbatches = 3  # batch 8
    with pytest.raises(UserError, match="train.microbatches=3"):
        build_engine(c)


def test_bf16_compute_keeps_f32_params_and_optimizer_state(tmp_path):
    c = _cfg_steps(steps=4, log_every=2, ck_every=4, eval_every=4)
    c.model.dtype = "bfloat16"  # compute; model.param_dtype stays float32
    engine = build_engine(c)
    dtypes = {a.dtype for a in jax.tree.leaves(engine.abstract_state["params"])}
    opt = {a.dtype for a in jax.tree.leaves(engine.abstract_state["opt_state"])
           if a.dtype.kind == "f"}
    assert dtypes == opt == {np.dtype("float32")}
    summary = train(c, str(tmp_path / "bf16"))
    assert summary["step"] == 4 and np.isfinite(summary["eval"]["psnr"])


def _fsq(c):
    c.model.quantizer, c.model.fsq_levels = "fsq", (4, 3, 3)
    c.model.code_dim, c.model.num_codes = 3, 36
    return c


def test_fsq_tokenizer_trains_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    # An FSQ tokenizer has no VQ statistics: the model state is empty and the checkpoint,
    # restart step and resume must all work without it.
    cfg = dict(steps=8, log_every=2, ck_every=4, eval_every=4)
    ref = str(tmp_path / "ref")
    summary = train(_fsq(_cfg_steps(**cfg)), ref)
    assert summary["step"] == 8 and summary["eval"]["code_usage"] > 0
    recs = [r for r in _jsonl(ref) if r["split"] == "train"]
    assert recs[-1]["loss"] < recs[0]["loss"] and recs[-1]["codes_restarted"] == 0
    wd = str(tmp_path / "stopped")
    _stop_after_saving(monkeypatch, at_step=4)
    assert train(_fsq(_cfg_steps(**cfg)), wd)["step"] == 4
    monkeypatch.undo()
    assert train(_fsq(_cfg_steps(**cfg)), wd)["step"] == 8
    assert _jsonl(wd) == _jsonl(ref)


def test_loop_keeps_at_most_one_step_queued(tmp_path, monkeypatch):
    """Each step waits for the one before it (not a host transfer), so a SIGTERM is acted on
    within about one step instead of after the steps the loop had queued ahead of the device."""
    waited = []
    real = jax.block_until_ready
    monkeypatch.setattr(jax, "block_until_ready",
                        lambda x: (waited.append(float(np.asarray(real(x)))), x)[1])
    summary = train(_cfg_steps(steps=6, log_every=3, ck_every=6, eval_every=6), str(tmp_path))
    assert summary["step"] == 6 and len(waited) == 5  # steps 2-6 each wait for the previous
    assert all(np.isfinite(waited))
