"""experiments/bench_gpu.py's sampler rows have a pulse on the CPU (test size): options parse,
a row times steps with one trace, and the FLOPs of a frame count every MaskGIT pass."""
import pytest

from experiments.bench_gpu import flops_row, sample_opts, sample_row


def test_sample_opts_parse_and_refuse_unknown_options():
    o = sample_opts("bfloat16:rope:unroll=5:tok=none:cast:prof")
    assert o == {"dtype": "bfloat16", "temporal_pos": "rope", "unroll": 5, "tok": "none",
                 "cast": True, "prof": True}
    with pytest.raises(ValueError, match="colour"):
        sample_opts("float32:rope:colour=red")


def test_sample_row_and_frame_flops_on_the_test_size():
    row = sample_row("float32:rope:unroll=5:cast", steps=3, size="test", frame_flops=1e9)
    assert row["traces"] == 1 and row["unroll"] == 5 and row["maskgit_steps"] == 25
    assert 0 < row["p50_ms"] <= row["p95_ms"] and row["mfu"] > 0
    flops = flops_row("float32:rope", "test")["flops_per_frame"]
    # 26 one-frame passes (25 MaskGIT steps and the commit) and a decode: far more than the
    # one loop body XLA's cost analysis counts when the loop is not unrolled (1.1e8 at this size)
    assert flops > 4e8
