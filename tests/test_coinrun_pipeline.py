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
