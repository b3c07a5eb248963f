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


def test_prints_url_binds_localhost_and_stops_on_ctrl_c(fake_dyn):
    import signal
    import urllib.request

    from genie_jax.play.browser import start_server, stop_server
    proc, url, lines = start_server(fake_dyn)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert "press Ctrl+C to stop" in lines[-1]
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200 and b"genie-jax play" in r.read()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "genie-jax play: stopped" in out
        assert "Traceback" not in out
    finally:
        stop_server(proc)
