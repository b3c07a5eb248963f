"""experiments/bench_train_ab.py has a pulse: one checkout under the two allocators, at the
test shape, and a bad row is one clear line. Subprocesses: the script defines absl flags."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "bench_train_ab.py")


def _run(*flags):
    return subprocess.run([sys.executable, SCRIPT, *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_one_row_under_both_allocators(tmp_path):
    out = tmp_path / "ab.json"
    r = _run("--rows=lam:test", "--malloc=default,tuned", "--rounds=1", "--steps=1",
             f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(out.read_text())
    row = got["rows"]["lam:test"]
    assert got["malloc"] == {"before": "default", "after": "tuned"}
    for side in ("before", "after"):
        assert row[side]["step_s_median"] > 0 and row[side]["step_flops"] > 0
        assert row[side]["genie_jax"] == os.path.join(REPO, "genie_jax")
    assert row["speedup"] > 0


def test_bad_row_is_one_clear_line():
    r = _run("--rows=tokeniser:quick")
    assert r.returncode != 0 and "tokeniser:quick" in r.stderr and "Traceback" not in r.stderr
