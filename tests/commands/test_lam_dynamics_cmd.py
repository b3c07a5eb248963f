"""`genie-jax train` for the lam and dynamics stages (tiny, few steps), then the sampler on the run.

The dynamics run uses fake finished tokenizer/LAM runs (init params saved like the trainer does).
Without the trainer's frozen-params hook the stage loads them itself at trace time (jit
constants); with the hook the same test covers the hook path.
"""
import json
import os

import numpy as np

from tests.conftest import REPO, run_cli
from tests.stages.helpers import frames_batch, save_fake_run, test_config as _cfg

CFGS = os.path.join(REPO, "experiments", "configs")
FAST = ["--config.train.steps=4", "--config.train.log_every=2", "--config.train.eval_every=4",
        "--config.checkpoint.every=2"]


def test_lam_has_a_pulse(tmp_path):
    wd = str(tmp_path / "lam")
    proc = run_cli(["train", f"--config={CFGS}/lam.py:size=test", f"--workdir={wd}", *FAST])
    assert "done: step 4/4" in proc.stdout
    summary = json.load(open(os.path.join(wd, "summary.json")))
    assert set(summary["eval"]) >= {"psnr", "action_usage", "action_perplexity"}
    assert os.path.exists(os.path.join(wd, "next_frame_predictions.png"))


def test_dynamics_has_a_pulse_and_samples(tmp_path):
    tok, lam, wd = str(tmp_path / "tok"), str(tmp_path / "lam"), str(tmp_path / "dyn")
    save_fake_run(tok, _cfg("tokenizer"))
    save_fake_run(lam, _cfg("lam"))
    proc = run_cli(["train", f"--config={CFGS}/dynamics.py:size=test,tokenizer={tok},lam={lam}",
                    f"--workdir={wd}", *FAST])
    assert "done: step 4/4" in proc.stdout
    summary = json.load(open(os.path.join(wd, "summary.json")))
    assert set(summary["eval"]) >= {"ce", "masked_acc", "action_usage"}
    recs = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert all(np.isfinite(r["loss"]) for r in recs if r["split"] == "train")
    assert os.path.exists(os.path.join(wd, "dynamics_last_frame.png"))
    from genie_jax.sampling import WorldModel, rollout
    wm = WorldModel.load(wd)
    frames = rollout(wm, frames_batch(1, 2, 16), np.array([[0, 1, 2]]))
    assert frames.shape == (1, 3, 16, 16, 3) and wm.trace_count == 1
