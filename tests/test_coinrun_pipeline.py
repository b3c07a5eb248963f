"""The `make quickstart` driver (experiments/coinrun_pipeline.py) end to end at its smoke budget:
CoinRun generation (procgen venv), three trainings, eval and a GIF."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_smoke_pipeline_runs_every_stage_and_reports(tmp_path):
    root, data = tmp_path / "runs", tmp_path / "data"
    cmd = [sys.executable, os.path.join(REPO, "experiments", "coinrun_pipeline.py"),
           "--budget=smoke", f"--root={root}", f"--data={data}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.rstrip().endswith(f"genie-jax play --workdir={root / 'dyn'}")
    summary = json.loads((root / "pipeline.json").read_text())
    assert list(summary["seconds"]) == ["data", "tokenizer", "lam", "dynamics", "eval", "sample"]
    h = summary["heldout"]
    assert 0 < h["tokenizer_psnr"] < 100 and h["action_class_nmi"] is not None
    assert h["delta_psnr_t4_shuffled"] is not None
    assert 0 < h["rollout_pooled_psnr"] < 100 and 0 < h["still_image_pooled_psnr"] <= 100
    for f in ("eval/eval.json", "eval/rollouts.gif", "eval/psnr_per_step.png", "rollout.gif"):
        assert (root / f).stat().st_size > 0
    # rerunning resumes: every stage is already done, so nothing retrains
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "0 blocks generated" in again.stdout
    assert again.stdout.count("resumed from") == 3  # tokenizer, LAM, dynamics: at their end


def test_the_frontier_budget_runs_the_measured_chain():
    """--budget=frontier is RESULTS.md's best 2-hour chain on the quickstart's 400 episodes: the
    quick tokenizer, the quality LAM, the quality dynamics, and a second eval by one MBR pass.
    (A subprocess: the script defines absl flags.)"""
    code = ("import json; from experiments.coinrun_pipeline import stage_commands as s; "
            "print(json.dumps({b: s(b, '/d', '/r') for b in ('frontier', 'quick')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    plans = {b: dict(cmds) for b, cmds in json.loads(out.stdout).items()}
    front, quick = plans["frontier"], plans["quick"]
    assert list(front) == ["data", "tokenizer", "lam", "dynamics", "eval", "eval_sampled", "sample"]
    assert list(quick) == ["data", "tokenizer", "lam", "dynamics", "eval", "sample"]
    assert front["data"] == quick["data"] and front["tokenizer"] == quick["tokenizer"]
    assert front["lam"][1].endswith("lam_coinrun.py:dir=/d,budget=quality")
    assert front["lam"][-1].startswith("--workdir=")  # the config's change-weighted LAM loss
    assert "budget=quality,tokenizer=/r/tok,lam=/r/lam" in front["dynamics"][1]
    assert front["eval_sampled"][-3:] == ["--pick=sample", "--steps=8", "--guidance=1"]
    assert front["eval"] == quick["eval"] and "--out=/r/eval_sampled" in front["eval_sampled"]
    assert quick["data"][3] == "--episodes=400"
