"""`genie-jax play` start-up errors are one line with exit code 2 (the server never starts)."""
import os

import numpy as np

from tests.conftest import run_cli


def _one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("genie-jax: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_not_a_dynamics_run(fake_dyn, tmp_path):
    tok = os.path.join(os.path.dirname(fake_dyn), "tok")
    _one_line_error(run_cli(["play", f"--workdir={tok}", "--port=0"], check=False),
                    "not a dynamics run")
    _one_line_error(run_cli(["play", f"--workdir={tmp_path / 'nope'}"], check=False),
                    "does not exist")
    _one_line_error(run_cli(["play"], check=False), "--workdir")


def test_bad_prompt_and_flags(fake_dyn, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 64, 64, 3), np.uint8))
    _one_line_error(run_cli(["play", f"--workdir={fake_dyn}", f"--prompt={bad}", "--port=0"],
                            check=False), "bad.npy", "[T, 16, 16, 3]")
    _one_line_error(run_cli(["play", f"--workdir={fake_dyn}", "--prompt=999", "--port=0"],
                            check=False), "episode 999")
    _one_line_error(run_cli(["play", f"--workdir={fake_dyn}", "--split=train"], check=False),
                    "must not be 'train'")
