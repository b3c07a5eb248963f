"""Train-step time of two checkouts of genie_jax, side by side: before and after a change.

  python experiments/bench_train_ab.py --code=. --compare=/work/wt/base \
      --rows=tokenizer:quick,lam:quick,dynamics:quick,tokenizer:large,lam:large,dynamics:large \
      --data=data/coinrun_quick --rounds=2 --steps=5 --out=bench_results/train_ab.json

Each (row, checkout) pair runs in its own subprocess, checkouts alternating, `--rounds` times;
a row's figure is the median step time over all its rounds. Only the imported `genie_jax`
package (and, with --malloc, glibc's allocator settings) differs between the two sides: the
configs, the step builder (bench_lib.EngineStep) and the random frozen params come from this
checkout. Without --compare, --malloc=default,tuned times this checkout under both allocators.

Rows are STAGE:SHAPE. Shapes:
  quick  the `make quickstart` stage (experiments/configs/{stage}_coinrun.py at budget=quick)
         on the CoinRun data in --data (random frozen tokenizer and LAM for the dynamics);
  small, large  bench_vs_jasmine.py's shapes (large: b2 x T16, 256 tokens, width 512, 4 layers).
"""
from __future__ import annotations

import json
from statistics import median
import os
import subprocess
import sys
import tempfile

from absl import app, flags

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

_CODE = flags.DEFINE_string("code", HERE, "the checkout whose genie_jax is timed (after)")
_COMPARE = flags.DEFINE_string("compare", "", "another checkout to time beside it (before)")
_ROWS = flags.DEFINE_list("rows", ["tokenizer:quick", "lam:quick", "dynamics:quick"],
                          "STAGE:SHAPE rows (see the docstring)")
_DATA = flags.DEFINE_string("data", "data/coinrun_quick", "CoinRun data folder (quick rows)")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps per subprocess (after two warm-ups)")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "subprocesses per (row, checkout)")
_OUT = flags.DEFINE_string("out", "bench_results/train_ab.json", "where to write the JSON")
_MALLOC = flags.DEFINE_list("malloc", ["tuned", "tuned"], "glibc malloc of the before and after "
                            "sides: tuned (genie_jax/host_malloc.py, what genie-jax uses) or "
                            "default (glibc as it comes)")
_ONE = flags.DEFINE_string("one_row", "", "internal: time this row here and print its JSON")

STAGES = ("tokenizer", "lam", "dynamics")


def row_config(row: str, data: str):
    """The stage config a row times; a clear error for a malformed row."""
    stage, _, shape = row.partition(":")
    if stage not in STAGES or shape not in ("quick", "small", "large", "test"):
        raise app.UsageError(f"--rows: {row!r} is not STAGE:SHAPE with STAGE in {STAGES} and "
                             "SHAPE in quick, small, large")
    if shape != "quick":
        from experiments.bench_shapes import ours_config
        return ours_config(stage, shape)
    import importlib
    if not os.path.isdir(data):
        raise app.UsageError(f"--data={data}: no such folder (quick rows read CoinRun batches; "
                             "`genie-jax data coinrun` makes one)")
    mod = importlib.import_module(f"experiments.configs.{stage}_coinrun")
    return mod.get_config(f"dir={data},budget=quick")


def time_row(row: str, data: str, steps: int) -> dict:
    from experiments.bench_lib import EngineStep
    step = EngineStep(row_config(row, data))
    for _ in range(2):
        step()
    times = sorted(step()[0] for _ in range(steps))
    return {"row": row, "step_s": times, "step_flops": step.flops, "compile_s": step.compile_s}


def main(argv):
    del argv
    if _ONE.value:  # a child: import genie_jax from --code, time one row
        import experiments  # noqa: F401  (this checkout's: bound before --code joins the path)
        import experiments.configs  # noqa: F401
        sys.path.insert(0, os.path.abspath(_CODE.value))
        import genie_jax
        print(json.dumps({**time_row(_ONE.value, _DATA.value, _STEPS.value),
                          "genie_jax": os.path.dirname(genie_jax.__file__)}))
        return
    for row in _ROWS.value:
        row_config(row, _DATA.value)  # bad rows and data fail before anything runs
    if len(_MALLOC.value) != 2 or set(_MALLOC.value) - {"tuned", "default"}:
        raise app.UsageError(f"--malloc takes two of tuned|default (before,after); got "
                             f"{','.join(_MALLOC.value)}")
    from genie_jax.host_malloc import OPT_OUT, tuned_environ
    envs = {}
    for side, mode in zip(("before", "after"), _MALLOC.value):
        env = dict(os.environ)
        env.pop("GLIBC_TUNABLES", None)
        if mode == "default":
            env[OPT_OUT] = "0"
        else:
            env.pop(OPT_OUT, None)
            env = tuned_environ(env) or env
        envs[side] = env
    sides = {"after": _CODE.value}
    if _COMPARE.value:
        if not os.path.isdir(os.path.join(_COMPARE.value, "genie_jax")):
            raise app.UsageError(f"--compare={_COMPARE.value}: no genie_jax package there")
        sides = {"before": _COMPARE.value, **sides}
    elif _MALLOC.value[0] != _MALLOC.value[1]:  # one checkout under two allocators
        sides = {"before": _CODE.value, **sides}
    import jax
    results = {"backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "malloc": dict(zip(("before", "after"), _MALLOC.value)),
               "rounds": _ROUNDS.value, "steps": _STEPS.value, "rows": {}}
    for row in _ROWS.value:
        times = {side: [] for side in sides}
        flops, where = {}, {}
        for _ in range(_ROUNDS.value):
            for side, root in sides.items():
                cmd = [sys.executable, os.path.abspath(__file__), f"--one_row={row}",
                       f"--code={os.path.abspath(root)}", f"--data={_DATA.value}",
                       f"--steps={_STEPS.value}"]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     env=envs[side]).stdout
                r = json.loads(out.strip().splitlines()[-1])
                times[side] += r["step_s"]
                flops[side], where[side] = r["step_flops"], r["genie_jax"]
        entry = {side: {"step_s_median": median(t), "step_s_all": t, "step_flops": flops[side],
                        "flops_per_s": flops[side] / median(t), "genie_jax": where[side]}
                 for side, t in times.items()}
        if "before" in entry:
            entry["speedup"] = entry["before"]["step_s_median"] / entry["after"]["step_s_median"]
        results["rows"][row] = entry
        line = "  ".join(f"{s} {e['step_s_median'] * 1e3:.1f} ms ({e['flops_per_s'] / 1e9:.0f} "
                         f"GFLOP/s)" for s, e in entry.items() if isinstance(e, dict))
        sp = f"  speedup {entry['speedup']:.3f}x" if "speedup" in entry else ""
        print(f"{row:18s} {line}{sp}", flush=True)
    from genie_jax.media import write_text
    write_text(_OUT.value, json.dumps(results, indent=2))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
