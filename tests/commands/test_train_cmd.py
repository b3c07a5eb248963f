"""The real `genie-jax train` entry point: pulse, bad input, resume, preemption."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import NO_EVAL, REPO, TOKENIZER_CFG, run_cli, xla_env
from tests.train import probe

CFG = f"--config={TOKENIZER_CFG}:size=test"


# checkpoint.every (3) is not a multiple of log_every (2): a resume starts mid log window.
RUN_STEPS = ["--config.train.steps=24", "--config.checkpoint.every=3"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished 24-step run of the real command (checkpoints kept: 18, 21, 24): the pulse
    test's subject, the SIGKILL test's uninterrupted reference, and the run folder that the
    incompatible-config and corrupt-checkpoint tests copy. Made once: each run is seconds of
    process start-up and tracing, whatever its length."""
    cwd = tmp_path_factory.mktemp("finished")
    proc = run_cli(["train", CFG, "--workdir=run", *RUN_STEPS], cwd=str(cwd))  # relative
    return str(cwd / "run"), proc.stdout


def _records(workdir, split="train"):
    """Last logged record per step (a resumed run re-logs steps after its checkpoint)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["split"] == split:
                out[r["step"]] = r
    return out


def test_tokenizer_has_a_pulse(finished_run):
    wd, stdout = finished_run
    assert "done: step 24/24" in stdout
    summary = json.load(open(os.path.join(wd, "summary.json")))
    assert summary["step"] == 24 and not summary["preempted"]
    assert set(summary["eval"]) >= {"psnr", "ssim", "code_usage", "code_perplexity"}
    recs = _records(wd)
    assert sorted(recs) == list(range(2, 25, 2))
    assert all(np.isfinite(r["loss"]) for r in recs.values())
    assert recs[24]["loss"] < recs[2]["loss"]  # it learns
    assert sorted(_records(wd, "eval")) == [6, 12, 18, 24]
    assert os.path.exists(os.path.join(wd, "reconstructions.png"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(wd, "tb")))
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["18", "21", "24"]  # keep=3
    # (Resuming a finished run: tests/train/test_trainer.py.)


def test_unknown_config_key_is_one_line_error(tmp_path):
    proc = run_cli(["train", CFG, f"--workdir={tmp_path}", "--config.model.widht=3"], check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "widht" in err[0] and "Traceback" not in proc.stderr


def test_wrong_frame_shape_names_the_config_keys(tmp_path):
    # model.image_size follows data.resolution unless set itself: 16x16 frames, a 24x24 model
    proc = run_cli(["train", CFG, f"--workdir={tmp_path}", "--config.model.image_size=(24,24)"],
                   check=False)
    assert proc.returncode == 2
    assert "data.resolution" in proc.stderr and "Traceback" not in proc.stderr
    assert "(8, 4, 24, 24, 3)" in proc.stderr


def test_incompatible_checkpoint_is_refused_and_kept(finished_run, tmp_path):
    wd = shutil.copytree(finished_run[0], str(tmp_path / "run"))
    before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
    proc = run_cli(["train", CFG, f"--workdir={wd}", "--config.model.width=48", *RUN_STEPS],
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "incompatible config" in proc.stderr and "model.width" in proc.stderr
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == before == ["18", "21", "24"]


def test_nan_stops_the_run_without_checkpointing_bad_state(tmp_path):
    wd = str(tmp_path / "run")
    proc = run_cli(["train", CFG, f"--workdir={wd}", "--config.optim.lr=1e30",
                    "--config.optim.clip_norm=0", "--config.optim.warmup_steps=0"], check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "NaN/inf" in proc.stderr and "Traceback" not in proc.stderr
    ckdir = os.path.join(wd, "checkpoints")
    assert not os.path.exists(ckdir) or os.listdir(ckdir) == [] or \
        all(int(s) < 12 for s in os.listdir(ckdir))


def _spawn(wd, *extra):
    return subprocess.Popen([sys.executable, "-m", "genie_jax", "train", CFG, f"--workdir={wd}",
                             *extra], env=xla_env(1), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=240, nonempty=False):
    t0 = time.time()
    while not os.path.exists(path) or (nonempty and os.path.getsize(path) == 0):
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


def test_sigkill_then_resume_is_bit_identical(finished_run, tmp_path):
    ref, steps = finished_run[0], RUN_STEPS
    wd = str(tmp_path / "killed")
    proc = _spawn(wd, *steps)
    _wait_for(os.path.join(wd, "checkpoints", "9"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(wd, "summary.json"))
    resumed = run_cli(["train", CFG, f"--workdir={wd}", *steps])
    assert "resumed from" in resumed.stdout
    # metrics.jsonl reads as the uninterrupted run's, record for record (wall-clock rates aside).
    timing = {"steps_per_s", "frames_per_s"}
    lines = [[{k: v for k, v in json.loads(x).items() if k not in timing}
              for x in open(os.path.join(d, "metrics.jsonl"))] for d in (ref, wd)]
    assert lines[0] == lines[1]
    for d in (ref, wd):  # the final checkpoints, restored here (one device, like the runs)
        probe.main(d, f"{d}/params.npz", "1,1,1", "train.steps=24", "checkpoint.every=3")
    a, b = np.load(f"{ref}/params.npz"), np.load(f"{wd}/params.npz")
    assert int(a["__step"]) == int(b["__step"]) == 24
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    wd = str(tmp_path / "run")
    proc = _spawn(wd, "--config.train.steps=100000", "--config.checkpoint.every=1000")
    _wait_for(os.path.join(wd, "metrics.jsonl"), proc, nonempty=True)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM" in out and "preempted, checkpoint saved" in out
    saved = [int(s) for s in os.listdir(os.path.join(wd, "checkpoints"))]
    assert len(saved) == 1 and saved[0] >= 2
    assert json.load(open(os.path.join(wd, "summary.json")))["preempted"] is True


def test_corrupt_latest_checkpoint_falls_back_to_previous(finished_run, tmp_path):
    wd = shutil.copytree(finished_run[0], str(tmp_path / "run"))
    latest = os.path.join(wd, "checkpoints", "24", "state")
    for root, _, files in os.walk(latest):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    proc = run_cli(["train", CFG, f"--workdir={wd}", *RUN_STEPS, NO_EVAL])
    assert "checkpoint at step 24 is unreadable" in proc.stdout
    assert "falling back to step 21" in proc.stdout
    assert "resumed from" in proc.stdout and proc.stdout.strip().endswith(f"run folder {wd}")
    assert "done: step 24/24" in proc.stdout
    # The unreadable step was set aside, and the resumed run saved step 24 afresh.
    assert os.path.isdir(os.path.join(wd, "checkpoints_unreadable", "24"))
    assert "24" in os.listdir(os.path.join(wd, "checkpoints"))
