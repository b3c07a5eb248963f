"""`genie-jax plan`: the real train step compiled ahead of time; memory, FLOPs, fit, advice.

The default suite plans test-size configs on simulated CPU devices. The TPU test needs libtpu
(`pip install -e '.[tpu]'`) and is skipped without it."""
import importlib
import importlib.util
import json
import re

import pytest

from genie_jax import plan as P
from genie_jax.errors import UserError
from tests.conftest import REPO, run_cli

TOK_TEST = f"--config={REPO}/experiments/configs/tokenizer.py:size=test"
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def _config(stage, arg):
    return importlib.import_module(f"experiments.configs.{stage}").get_config(arg)


def test_plan_of_a_dynamics_step_on_a_cpu_device(tmp_path):
    import jax
    cfg = _config("dynamics", f"size=test,tokenizer={tmp_path}/none,lam={tmp_path}/none")
    p = P.plan(cfg, jax.devices("cpu")[:1], P.CPU, steps=1000)
    m = p["memory_per_chip_bytes"]
    assert m["total"] == m["argument"] + m["output"] - m["alias"] + m["temp"]
    assert m["argument"] > 4 * 3 * p["params"]  # f32 params and two Adam moments, at least
    assert m["alias"] > 0  # the donated train state is reused for the new one
    assert p["params"] == P.count_params(cfg) == 22272
    # The compiled step does what the model does, and a little more (optimizer, VQ restarts).
    assert 0.9 < p["model_flops_per_step"] / p["compiler_flops_per_step"] <= 1.0
    assert p["fits"] is None and "HBM unknown" in P.fit_line(p)
    assert p["steps"] == 1000 and p["batch"] == 8 and p["stage"] == "dynamics"
    # A chip too small for it: one line with the figure, and advice that was compiled.
    small = P.Chip("a small chip", hbm_gib=m["total"] / 2 / P.GIB, peak_flops=1e12)
    p["fits"], p["chip"], p["hbm_gib"] = False, small.name, small.hbm_gib
    line = P.fit_line(p)
    assert line.startswith("DOES NOT FIT: ") and f"{m['total'] / P.GIB:.2f} GiB" in line
    sugg = P.suggest(cfg, jax.devices("cpu")[:1], small, max_compiles=1)
    assert len(sugg) == 1 and sugg[0]["change"] == "model.remat=save_dots"
    assert sugg[0]["total_gib"] > 0 and sugg[0]["fits"] is False


def test_plan_command_on_simulated_cpu_devices_writes_json(tmp_path):
    out = tmp_path / "plan.json"
    proc = run_cli(["plan", TOK_TEST, "--devices=2", f"--out={out}", "--steps=50",
                    "--config.mesh.shape=(1,-1,1)"], devices=2)
    p = json.loads(out.read_text())
    assert p["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1} and p["devices"] == 2
    assert p["target"] == "2 CPU devices" and p["steps"] == 50
    assert p["flops_per_chip"] > 0 and p["model_flops_per_step"] > 0
    assert p["memory_per_chip_bytes"]["total"] > 0
    assert "memory per chip: arguments" in proc.stdout and "FLOPs per step" in proc.stdout
    assert p["command"].startswith("genie-jax plan --config=")


@pytest.mark.parametrize("args, msg", [
    ([TOK_TEST], "one of --topology=v5p:8x8x4 or --devices=N"),
    ([TOK_TEST, "--devices=2", "--topology=v5p:2x2x1"], "one of --topology"),
    ([TOK_TEST, "--topology=v5p-8"], "is not GENERATION:AxBxC"),
    ([TOK_TEST, "--topology=v9z:2x2x1"], "unknown TPU generation 'v9z'"),
    ([TOK_TEST, "--devices=3"], "does not divide|batch_size=8 must divide"),
])
def test_plan_command_errors_are_one_line(args, msg):
    proc = run_cli(["plan", *args, "--out="], devices=3, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("genie-jax: error:")]
    assert len(err) == 1 and re.search(msg, err[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(HAS_LIBTPU, reason="checks the message shown when libtpu is missing")
def test_topology_without_libtpu_says_how_to_install_it():
    with pytest.raises(UserError, match=r"needs libtpu: pip install -e '\.\[tpu\]'"):
        P.tpu_devices("v5p:2x2x1")


@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu: pip install -e '.[tpu]'")
def test_plan_for_a_v5p_topology(tmp_path):
    out = tmp_path / "plan.json"
    run_cli(["plan", TOK_TEST, "--topology=v5p:2x2x1", f"--out={out}", "--steps=1000"],
            timeout=600)
    p = json.loads(out.read_text())
    assert p["devices"] == 4 and p["chip"] == "TPU v5p" and p["hbm_gib"] == 95
    assert p["fits"] is True and p["estimated_step_s"] > 0 and p["roofline_step_s"] > 0
    assert 0 < p["mfu"] < 1 and p["days"] == pytest.approx(p["estimated_step_s"] * 1000 / 86400)


def test_step_time_mfu_and_days_from_compiled_figures():
    chip = P.CHIPS["v5p"]
    compiled = {"devices": 256, "mesh": {"data": 1, "fsdp": 64, "tensor": 4},
                "memory_per_chip_bytes": {"total": 96 * P.GIB},
                "flops_per_chip": 4.59e14, "bytes_accessed_per_chip": 2.765e12 / 2,
                "model_flops_per_step": 0.75 * 4.59e14 * 256}
    p = P.derive(dict(compiled, xla_optimal_seconds=2.0), chip, steps=86400)
    assert p["fits"] is False and "DOES NOT FIT: 96.00 GiB per chip of 95 GiB" in P.fit_line(p)
    assert (p["estimated_step_s"], p["step_time_source"]) == (2.0, "XLA cost model")
    assert p["mfu"] == pytest.approx(0.375) and p["hardware_flops_utilization"] == 0.5
    assert p["days"] == pytest.approx(2.0) and p["roofline_step_s"] == pytest.approx(1.0)
    # XLA's estimate can come out negative: the roofline bound (compute-bound here) is used.
    p = P.derive(dict(compiled, xla_optimal_seconds=-1.5), chip, steps=10)
    assert p["estimated_step_s"] == pytest.approx(1.0) and p["step_time_source"].startswith("roof")
    assert p["mfu"] == pytest.approx(0.75)


def test_a_step_the_compiler_refuses_for_lack_of_hbm_is_a_plan_that_does_not_fit():
    msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
           "temporaries (112.90G) exceeds available HBM (95.74G).")
    oom = P._HBM_OOM.search(msg)
    assert float(oom.group(1)) * P._UNIT[oom.group(2)] == pytest.approx(112.90 * P.GIB)
    m = {"argument": P.GIB, "output": P.GIB, "alias": P.GIB, "temp": int(112.9 * P.GIB),
         "generated_code": 0, "compiler_peak": 0}
    p = P.derive({"devices": 32, "mesh": {"data": 1, "fsdp": 32, "tensor": 1},
                  "memory_per_chip_bytes": {**m, "total": m["argument"] + m["temp"]},
                  "compiler_error": oom.group(0), "flops_per_chip": None,
                  "bytes_accessed_per_chip": None, "xla_optimal_seconds": None},
                 P.CHIPS["v5p"], steps=10)
    assert p["fits"] is False and p["estimated_step_s"] is None and p["days"] is None
    line = P.fit_line(p)
    assert line.startswith("DOES NOT FIT: 113.90 GiB per chip of 95 GiB")
    assert "the compiler: HLO temporaries (112.90G) exceeds available HBM (95.74G)" in line


def test_microbatches_are_suggested_when_activations_dominate_and_really_compiled():
    import jax
    cfg = _config("tokenizer", "size=test")
    with cfg.unlocked():
        cfg.model.remat = "full"
    devices = jax.devices("cpu")[:1]
    p = P.plan(cfg, devices, P.CPU, count_model_flops=False)
    m = p["memory_per_chip_bytes"]
    assert m["temp"] > m["argument"]  # activations dominate: microbatches come first
    small = P.Chip("a small chip", hbm_gib=m["total"] / 4 / P.GIB, peak_flops=None)
    (sug,) = P.suggest(cfg, devices, small, p, max_compiles=1)
    assert sug["change"].startswith("train.microbatches=2 (gradient accumulation, 4 clips")
    assert 0 < sug["total_gib"] * P.GIB < m["total"]  # one half-batch of activations at a time


def test_model_flops_count_every_scanned_block():
    # XLA's cost analysis counts a loop body once: the model FLOPs of a scan_layers config are
    # counted on the same weights unrolled, and the plan says its compiled figures undercount.
    cfg = _config("tokenizer", "size=test")
    with cfg.unlocked():
        cfg.model.depth = cfg.model.decoder_depth = 3
    scanned = P._with(cfg, **{"model.scan_layers": True})
    assert P._scanned(cfg) == [] and P._scanned(scanned) == ["model.scan_layers"]
    assert P.model_flops(scanned) == P.model_flops(cfg) > 0
