"""Sharding, resharding on restore and multi-process runs, on simulated CPU devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import NO_EVAL, REPO, TOKENIZER_CFG, run_cli, run_python, xla_env
from tests.stages.helpers import test_config as stage_config

CFG = f"--config={TOKENIZER_CFG}:size=test"

EIGHT_DEVICES = r'''
import jax, numpy as np, sys
sys.path.insert(0, ".")
from experiments.configs.tokenizer import get_config
from genie_jax.train.trainer import build_engine, loader_options, train
from genie_jax.data.loader import make_iterator
from tests.train import probe

wd, tmp = sys.argv[1], sys.argv[2]
assert len(jax.devices()) == 8
# 1. Three steps on one device and on a (2, 2, 2) mesh of all 8 give the same losses and params.
results = {}
for name, shape, devs in [("single", (1, 1, 1), jax.devices()[:1]), ("sharded", (2, 2, 2), jax.devices())]:
    cfg = get_config("size=test")
    cfg.mesh.shape = shape
    eng = build_engine(cfg, devices=devs)
    it = make_iterator(eng.stage.train_source(), loader_options(cfg, seed=0))
    with eng.context():
        state = eng.init_fn(jax.random.PRNGKey(0))
        specs = {str(x.sharding.spec) for x in jax.tree.leaves(state["params"])}
        losses = []
        for _ in range(3):
            state, m = eng.step_fn(state, eng.global_batch(next(it)), {})
            losses.append(float(m["loss"]))
    results[name] = (losses, jax.device_get(state["params"]), specs)
(l1, p1, s1), (l8, p8, s8) = results["single"], results["sharded"]
print("specs", sorted(s8))
assert any("fsdp" in s for s in s8) and any("tensor" in s for s in s8), s8
np.testing.assert_allclose(l8, l1, rtol=2e-5)
for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    # Adam normalises updates, so float noise in near-zero gradients shows up at ~lr * 1e-2.
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=2e-5)
print("sharded step OK", l1, l8)
# 2. A 4-step run on the (2, 2, 2) mesh, then its checkpoint restored onto meshes of 8, 4 and 1
# of these devices (a mesh over fewer devices is what a smaller job sees).
cfg = get_config("size=test")
cfg.mesh.shape = (2, 2, 2)
cfg.train.update(steps=4, eval_batches=0)
train(cfg, wd)
for mesh in ("2,2,2", "1,2,2", "1,1,1"):
    probe.main(wd, f"{tmp}/p{mesh.replace(',', '')}.npz", mesh)
'''


def test_sharded_step_matches_one_device_and_its_checkpoint_restores_on_4_and_1(tmp_path):
    # One 8-device process for both checks: each such process is seconds of start-up and tracing.
    wd = str(tmp_path / "run")
    log = run_python(EIGHT_DEVICES, devices=8, args=[wd, str(tmp_path)])
    assert "sharded step OK" in log, log
    outs = {}
    for mesh, n in [("222", 8), ("122", 4), ("111", 1)]:
        assert f"restored 4 on {n} devices" in log, log
        outs[n] = np.load(str(tmp_path / f"p{mesh}.npz"))
    line4 = [x for x in log.splitlines() if "on 4 devices" in x][0]
    assert "fsdp" in line4, log  # the restored params are really sharded on the new mesh
    for n in (4, 1):
        for k in [f for f in outs[8].files if not f.startswith("__")]:
            np.testing.assert_array_equal(outs[n][k], outs[8][k], err_msg=f"{k} on {n}")
    # And the command continues the run on a new mesh of another process's 4 devices.
    proc = run_cli(["train", CFG, f"--workdir={wd}", "--config.mesh.shape=(1,2,2)",
                    "--config.train.steps=6", NO_EVAL], devices=4)
    assert "resumed from" in proc.stdout and "done: step 6/6" in proc.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_losses(workdir):
    out = {}
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        r = json.loads(line)
        if r["split"] == "train":
            out[r["step"]] = r["loss"]
    return out


def test_two_processes_match_one_process(tmp_path):
    steps = ["--config.train.steps=4", "--config.mesh.shape=(2,1,1)",
             "--config.checkpoint.every=2", NO_EVAL]
    two = str(tmp_path / "two")
    port = _free_port()
    env = xla_env(1)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "genie_jax", "train", CFG, f"--workdir={two}", *steps,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    # The one-process reference runs meanwhile, here, on this process's one device (the same
    # global batch; the pair spends part of its time waiting on each other). If anything fails,
    # the pair is not left running.
    try:
        from genie_jax.train.trainer import train
        cfg = stage_config("tokenizer")
        cfg.train.update(steps=4, eval_batches=0)
        cfg.checkpoint.every = 2
        one = str(tmp_path / "one")
        train(cfg, one)
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-4000:]
    assert "done: step 4/4" in outs[0][0]
    a, b = _train_losses(one), _train_losses(two)
    assert sorted(a) == sorted(b) == [2, 4]
    for s in a:
        np.testing.assert_allclose(b[s], a[s], rtol=1e-5)
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["2", "4"]
