"""`genie-jax eval` and `genie-jax sample` on a dynamics run.

Default suite: fake finished runs (init params saved like the trainer does) for speed.
Slow: the real pipeline — tokenizer, LAM and dynamics trained for a few steps through the CLI.
"""
import json
import os

import numpy as np
import pytest

from tests.conftest import REPO, run_cli
from tests.stages.helpers import save_fake_dynamics_on_data, save_fake_pipeline

CFGS = os.path.join(REPO, "experiments", "configs")
FAST = ["--config.train.steps=4", "--config.train.log_every=2", "--config.train.eval_every=4",
        "--config.checkpoint.every=2"]
EVAL_FAST = ["--episodes=3", "--rollout_frames=5", "--batch_size=2", "--steps=2"]
EVAL_KEYS = {"workdir", "checkpoint_step", "settings", "tokenizer", "lam", "rollout",
             "controllability", "action_nmi", "sampler_compiles", "outputs"}


def _check_eval(out: str, episodes: int, rollout_frames: int) -> dict:
    assert sorted(os.listdir(out)) == ["eval.json", "psnr_per_step.png", "rollouts.gif",
                                       "rollouts.png"]
    r = json.load(open(os.path.join(out, "eval.json")))
    assert set(r) >= EVAL_KEYS
    s = r["settings"]
    assert s["split"] == "test" and s["episodes"] == s["clips"] == episodes and s["seed"] == 0
    assert s["rollout_frames"] == rollout_frames and s["maskgit_steps"] == 2
    assert "temperature" in s
    for key in ("psnr", "ssim", "code_usage", "code_perplexity"):
        assert np.isfinite(r["tokenizer"][key]), key
    assert 0 < r["tokenizer"]["code_usage"] <= 1 and 0 < r["lam"]["code_usage"] <= 1
    assert len(r["rollout"]["psnr_per_step"]) == rollout_frames
    assert len(r["rollout"]["random_actions"]["psnr_per_step"]) == rollout_frames
    d = r["controllability"]
    assert d["t"] == 4 and len(d["delta_psnr_per_step"]) == rollout_frames
    assert d["delta_psnr"] == pytest.approx(
        r["rollout"]["psnr_per_step"][3] - r["rollout"]["random_actions"]["psnr_per_step"][3],
        abs=1e-6)
    assert len(d["delta_psnr_stderr_per_step"]) == rollout_frames
    assert d["delta_psnr_stderr"] == d["delta_psnr_stderr_per_step"][3]
    assert d["delta_psnr_stderr"] >= 0
    nmi = r["action_nmi"]  # procedural data has true actions
    assert nmi is not None and 0 <= nmi["nmi"] <= 1 and not nmi["coinrun"]
    assert nmi["pairs"] == episodes * (rollout_frames + 1 - 1)
    assert r["sampler_compiles"] == 1  # every rollout step of every batch: one compile
    return r


def _check_gif(path: str, frames: int):
    import imageio.v3 as iio
    v = iio.imread(path, index=None)
    assert v.shape[0] == frames and min(v.shape[1:3]) >= 64  # upscaled from 16x16


@pytest.fixture(scope="module")
def fake_dyn(tmp_path_factory):
    return save_fake_pipeline(tmp_path_factory.mktemp("runs"))


def test_eval_and_sample_on_a_run(fake_dyn, tmp_path):
    out = str(tmp_path / "eval")
    proc = run_cli(["eval", f"--workdir={fake_dyn}", f"--out={out}", *EVAL_FAST,
                    "--temperature=0.5", "--pick=mbr", "--guidance=2"])
    assert "delta-PSNR@4" in proc.stdout and "eval.json" in proc.stdout
    s = _check_eval(out, 3, 5)["settings"]  # the decoding flags reach the sampler
    assert (s["temperature"], s["pick"], s["guidance"]) == (0.5, "mbr", 2.0)
    gif = str(tmp_path / "s.gif")
    proc = run_cli(["sample", f"--workdir={fake_dyn}", f"--out={gif}", "--actions=0,3,1,5",
                    "--prompt_frames=2", "--steps=2"])
    assert "2 prompt + 4 generated" in proc.stdout
    _check_gif(gif, 6)


def test_sample_from_clip_mp4_and_errors(fake_dyn, tmp_path):
    mp4 = str(tmp_path / "c.mp4")
    proc = run_cli(["sample", f"--workdir={fake_dyn}", f"--out={mp4}", "--from_clip=1",
                    "--frames=5", "--steps=1"])
    assert "1 prompt + 5 generated" in proc.stdout and "real | generated" in proc.stdout
    assert os.path.getsize(mp4) > 0
    bad = run_cli(["sample", f"--workdir={fake_dyn}", f"--out={tmp_path}/x.gif",
                   "--actions=0,7"], check=False)
    assert bad.returncode == 2 and not os.path.exists(tmp_path / "x.gif")
    err = bad.stderr.strip().splitlines()
    assert len(err) == 1 and "[7] outside [0, 6)" in err[0]
    missing = str(tmp_path / "nope")
    bad = run_cli(["eval", f"--workdir={missing}"], check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert missing in bad.stderr


@pytest.mark.slow
def test_trained_pipeline_has_a_pulse(tmp_path):
    """Tokenizer, LAM and dynamics trained a few steps through the CLI, then eval and sample."""
    tok, lam, dyn = str(tmp_path / "tok"), str(tmp_path / "lam"), str(tmp_path / "dyn")
    run_cli(["train", f"--config={CFGS}/tokenizer.py:size=test", f"--workdir={tok}", *FAST])
    run_cli(["train", f"--config={CFGS}/lam.py:size=test", f"--workdir={lam}", *FAST])
    proc = run_cli(["train", f"--config={CFGS}/dynamics.py:size=test,tokenizer={tok},lam={lam}",
                    f"--workdir={dyn}", *FAST])
    assert "done: step 4/4" in proc.stdout
    run_cli(["eval", f"--workdir={dyn}", *EVAL_FAST])
    r = _check_eval(os.path.join(dyn, "eval"), 3, 5)
    assert r["checkpoint_step"] == 4
    gif = str(tmp_path / "s.gif")
    run_cli(["sample", f"--workdir={dyn}", f"--out={gif}", "--from_clip=0", "--frames=3",
             "--steps=2"])
    _check_gif(gif, 4)
    bad = run_cli(["eval", f"--workdir={tok}"], check=False)  # a tokenizer run
    assert bad.returncode == 2 and "not a dynamics run" in bad.stderr and tok in bad.stderr


def test_eval_on_coinrun_shards_reports_class_nmi(fake_dyn, tmp_path):
    """A held-out ArrayRecord split whose episodes say they are procgen CoinRun: the latent
    actions are compared with the true actions both raw and as the 6 behavioural classes."""
    from genie_jax.data import shards
    from genie_jax.evaluation import EvalSettings, evaluate, write_outputs
    data = str(tmp_path / "coinrun")
    w = shards.UnitWriter(os.path.join(data, shards.STAGING_DIR), "u0", (16, 16, 3),
                          fractions=shards.parse_fractions("0,0,1"), record_frames=4)
    rng = np.random.default_rng(0)
    for e in range(2):
        w.begin_episode(dict(source="procgen:coinrun", seed=e, fps=15.0, num_actions=15))
        w.add(rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8),
              rng.integers(0, 15, 9).astype(np.int32))
        w.end_episode()
    w.commit()
    shards.finalize(data)
    dyn = save_fake_dynamics_on_data(str(tmp_path / "dyn"), fake_dyn, data)
    r, art = evaluate(dyn, EvalSettings(episodes=4, rollout_frames=4, batch_size=2, steps=1),
                      log=lambda m: None)
    assert r["settings"]["episodes"] == 2 and r["settings"]["episode_sources"] == ["procgen:coinrun"]
    nmi = r["action_nmi"]
    assert nmi["coinrun"] and nmi["pairs"] == 2 * 4 and 0 <= nmi["class_nmi"] <= 1
    assert nmi["classes"][2] == "NOOP"
    paths = write_outputs(str(tmp_path / "out"), r, art)
    assert json.load(open(paths["json"]))["action_nmi"]["coinrun"] is True
