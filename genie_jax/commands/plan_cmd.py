"""`genie-jax plan`: compile a config's train step ahead of time for a TPU topology (or simulated
CPU devices) and report memory per chip, fit, FLOPs, step time, MFU and days; no hardware.

  genie-jax plan --config=experiments/configs/dynamics.py:size=11b --topology=v5p:8x8x4
  genie-jax plan --config=experiments/configs/tokenizer.py:size=test --devices=4
  [--steps=125000] [--out=plan.json] [--suggest=true] [--config.model.remat=none|full|save_dots ...]
--topology needs libtpu (pip install -e '.[tpu]'); --devices=N simulates N CPU devices.
"""
from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from genie_jax.commands.common import quiet_logging, run_command
from genie_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:args]",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology, GENERATION:AxBxC (v5p:8x8x4)")
_DEVICES = flags.DEFINE_integer("devices", None, "plan for N simulated CPU devices instead")
_STEPS = flags.DEFINE_integer("steps", None, "train steps for the days estimate "
                              "(default: config.train.steps)")
_OUT = flags.DEFINE_string("out", "plan.json", "where to write the plan as JSON ('' for none)")
_SUGGEST = flags.DEFINE_bool("suggest", True, "when it does not fit, compile variants "
                             "(remat, FSDP, tensor parallelism, microbatches) and report those")
_MODEL_FLOPS = flags.DEFINE_bool("model_flops", True, "also count the step's FLOPs without "
                                 "rematerialisation (one more lowering, on one CPU device)")


def _use_cpu_devices(n: int) -> None:
    """N simulated CPU devices: must be set before JAX starts its CPU backend."""
    import jax
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except Exception:  # noqa: BLE001 - a backend already started: cpu_devices says what to do
        pass


def main(argv):
    del argv
    quiet_logging()
    if _CONFIG.value is None or (_TOPOLOGY.value is None) == (_DEVICES.value is None):
        raise UserError("plan needs --config=FILE[:args] and one of --topology=v5p:8x8x4 "
                        "or --devices=N")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the compile target is the topology's
    from genie_jax import plan as P
    if _TOPOLOGY.value:
        devices, chip = P.tpu_devices(_TOPOLOGY.value), P.chip_of(_TOPOLOGY.value)
    else:
        _use_cpu_devices(_DEVICES.value)
        devices, chip = P.cpu_devices(_DEVICES.value), P.CPU
    config = _CONFIG.value
    p = P.plan(config, devices, chip, _STEPS.value, count_model_flops=_MODEL_FLOPS.value)
    p["command"] = " ".join(["genie-jax", "plan", *sys.argv[2:]]) if sys.argv[1:2] == ["plan"] \
        else " ".join(sys.argv)
    p["target"] = _TOPOLOGY.value or f"{_DEVICES.value} CPU devices"
    print(P.report_text(p), flush=True)
    _write(p)
    if p["fits"] is False and _SUGGEST.value:
        print("compiling variants that might fit...", flush=True)
        p["suggestions"] = []
        for sug in P.iter_suggestions(config, devices, chip, p):
            p["suggestions"].append(sug)
            print(P.suggestion_line(sug), flush=True)
            _write(p)


def _write(p: dict) -> None:
    if _OUT.value:
        from genie_jax import plan as P
        from genie_jax.media import write_text
        write_text(_OUT.value, json.dumps(P.jsonable(p), indent=2))
        print(f"wrote {_OUT.value}", flush=True)


def run(argv: list[str]) -> None:
    run_command(main, argv)
