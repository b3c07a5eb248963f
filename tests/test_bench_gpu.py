"""experiments/bench_gpu.py's sampler rows have a pulse on the CPU (test size): options parse, a
row times steps with one trace, a bad row is an error row naming its option, and the FLOPs of a
frame count every MaskGIT pass. Run as a subprocess: the script defines absl flags at import."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sampler_rows_and_frame_flops_on_the_test_size(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, os.path.join(REPO, "experiments", "bench_gpu.py"),
                    "--size=test", "--parts=sample,flops", "--steps=3", "--frame_flops=1e9",
                    "--sample_rows=float32:rope:unroll=5:cast:attn=xla,float32:rope:colour=red",
                    f"--out={out}"], check=True, cwd=REPO, capture_output=True, timeout=600)
    rows = json.loads(out.read_text())["rows"]
    sample, bad, flops, bad_flops = rows
    assert sample["traces"] == 1 and sample["unroll"] == 5 and sample["cast"] is True
    assert sample["attn"] == "xla"
    assert sample["maskgit_steps"] == 25
    assert 0 < sample["p50_ms"] <= sample["p95_ms"] and sample["mfu"] > 0
    assert "colour" in bad["error"] and "colour" in bad_flops["error"]
    # 26 one-frame passes (25 MaskGIT steps and the commit) and a decode: far more than the one
    # loop body XLA's cost analysis counts when the loop is not unrolled (1.1e8 at this size)
    assert flops["flops_per_frame"] > 4e8
