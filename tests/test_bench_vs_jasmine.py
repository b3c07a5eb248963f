"""experiments/bench_vs_jasmine.py: our side of each stage's row has a pulse at the test shape,
and bad flags (a folder that is not a Jasmine checkout, an unknown stage) are one clear line, not a
traceback. Jasmine's side needs a Jasmine checkout, which the test machine does not have. Run as
a subprocess: the script defines absl flags at import."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "bench_vs_jasmine.py")


def _run(tmp_path, *flags):
    return subprocess.run([sys.executable, SCRIPT, *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


def test_our_side_of_every_stage_at_the_test_shape(tmp_path):
    out = tmp_path / "vs.json"
    r = _run(tmp_path, "--frameworks=genie_jax", "--shapes=test", "--steps=2", "--rounds=1",
             f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["stage"] for row in rows] == ["tokenizer", "lam", "dynamics"]
    for row in rows:
        ours = row["genie_jax"]
        assert len(ours["step_s_all"]) == 2 and ours["step_s_median"] > 0
        assert ours["step_flops"] > 0 and ours["params"] > 0
        assert "jasmine" not in row and "jasmine_over_genie_jax" not in row
    # test shape: b2 x T4 clips for every stage
    assert all(row["frames_per_step"] == 8 for row in rows)


def test_bad_flags_are_one_clear_line(tmp_path):
    r = _run(tmp_path, f"--jasmine_dir={tmp_path}", "--shapes=test")
    assert r.returncode != 0
    assert "is not a Jasmine checkout" in r.stderr and str(tmp_path) in r.stderr
    assert "Traceback" not in r.stderr
    r = _run(tmp_path, "--frameworks=genie_jax", "--stages=tokeniser")
    assert r.returncode != 0 and "tokeniser" in r.stderr and "Traceback" not in r.stderr
