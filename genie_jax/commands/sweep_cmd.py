"""`genie-jax sweep`: a grid of runs, one after another on this machine, resumable and shardable.

  genie-jax sweep --config=FILE[:knobs] --grid=KEY=V1,V2 [--grid=...] [--seeds=N] --root=DIR
      [--set=KEY=VALUE ...]                 every run (e.g. --set=train.steps=2000)
      [--exclude='KEY=V KEY2=V2' ...]       leave out the grid points with all these values
      [--one_at_a_time]                     only the baseline (each axis' first value) and the
                                            points that change one axis from it
      [--upstream=tokenizer=FILE[:knobs]] [--upstream=lam=FILE[:knobs]]   shared upstream runs
      [--eval_set=KEY=VALUE ...] [--eval_grid=KEY=V1,V2] [--noeval]   `genie-jax eval` settings
      [--fit_actions]                       `genie-jax actions fit` before evaluating (true-
                                            action rollouts in eval.json; needs true actions)
      [--shard=I/N] [--inprocess] [--dry_run]
  genie-jax sweep --spec=SWEEP_FILE[:knobs] --root=DIR [--seeds=N] [--shard=I/N] ...
  genie-jax sweep report --root=DIR [--metrics=eval.rollout.psnr,summary.eval.ce]
      [--baseline=VARIANT] [--curves=train/loss,eval/ce] [--out=DIR]

KEY: a config key (`model.action_mode`) or a knob of the config file (`:lam_mode`). A sweep file
is Python with get_sweep(arg) -> dict(config=, grid=[...], seeds=, set=[...], upstream={...},
eval_set=[...], eval_grid=[...], exclude=[...], fit_actions=bool, one_at_a_time=bool) in the
flags' syntax
(e.g. experiments/sweeps/genie_coinrun.py).
See genie_jax/sweep/ for the layout of DIR, resume, shards and upstream runs.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from absl import flags

from genie_jax.commands.common import quiet_logging, run_command
from genie_jax.errors import UserError

_CONFIG = flags.DEFINE_string("config", None, "experiment config FILE[:knobs]")
_SPEC = flags.DEFINE_string("spec", None, "sweep file FILE[:knobs] (instead of --config/--grid)")
_GRID = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,...: one axis of the grid")
_SEEDS = flags.DEFINE_integer("seeds", None, "seeds per grid point (0..N-1; default 1)")
_ROOT = flags.DEFINE_string("root", None, "sweep folder")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE for every run")
_EXCLUDE = flags.DEFINE_multi_string("exclude", [], "'KEY=V KEY2=V2': grid points left out")
_UPSTREAM = flags.DEFINE_multi_string("upstream", [], "STAGE=FILE[:knobs] (tokenizer, lam)")
_EVAL = flags.DEFINE_bool("eval", True, "evaluate every dynamics run (genie-jax eval)")
_EVAL_SET = flags.DEFINE_multi_string("eval_set", [], "KEY=VALUE: a genie-jax eval setting")
_EVAL_GRID = flags.DEFINE_multi_string("eval_grid", [], "KEY=V1,V2: an eval-only axis")
_FIT = flags.DEFINE_bool("fit_actions", False, "genie-jax actions fit before evaluating a run "
                         "with a LAM (its eval then drives rollouts by the true actions too)")
_OAT = flags.DEFINE_bool("one_at_a_time", False, "only the baseline (every axis at its first "
                         "value) and the points that change one axis from it")
_SHARD = flags.DEFINE_string("shard", "0/1", "I/N: run every N-th run starting at I")
_INPROCESS = flags.DEFINE_bool("inprocess", False, "train in this process (default: a "
                               "subprocess per run)")
_DRY = flags.DEFINE_bool("dry_run", False, "check the sweep and print its runs; run nothing")
_METRICS = flags.DEFINE_list("metrics", [], "report: metrics (eval.KEY, summary.KEY)")
_BASELINE = flags.DEFINE_string("baseline", None, "report: the baseline variant")
_CURVES = flags.DEFINE_list("curves", [], "report: learning curves (SPLIT/KEY)")
_OUT = flags.DEFINE_string("out", None, "report: output folder (default ROOT/report)")


def load_sweep_file(spec: str) -> dict:
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"--spec: sweep file {path!r} does not exist")
    root = os.path.dirname(os.path.abspath(path))
    while os.path.exists(os.path.join(root, "__init__.py")):
        root = os.path.dirname(root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        mod_spec = importlib.util.spec_from_file_location("genie_jax_sweep_file", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        d = mod.get_sweep(arg or None)
    except Exception as e:  # noqa: BLE001 - a sweep file that fails to load or a bad knob
        raise UserError(f"--spec={spec}: could not load it ({type(e).__name__}: {e})") from None
    unknown = set(d) - {"config", "grid", "seeds", "set", "upstream", "eval", "eval_set",
                        "eval_grid", "exclude", "fit_actions", "one_at_a_time"}
    if unknown:
        raise UserError(f"--spec={spec}: unknown entries {sorted(unknown)}")
    return d


def build_spec():
    from genie_jax.sweep.spec import SweepSpec, parse_axis, parse_exclude, parse_setting
    if _SPEC.value:
        given = [f for f, v in (("--config", _CONFIG.value), ("--grid", _GRID.value),
                                ("--set", _SET.value), ("--upstream", _UPSTREAM.value),
                                ("--eval_set", _EVAL_SET.value), ("--eval_grid", _EVAL_GRID.value),
                                ("--exclude", _EXCLUDE.value), ("--fit_actions", _FIT.value),
                                ("--one_at_a_time", _OAT.value))
                 if v]
        if given:
            raise UserError(f"--spec defines the sweep; leave out {', '.join(given)}")
        d = load_sweep_file(_SPEC.value)
        config, grid, sets = d.get("config"), list(d.get("grid", [])), list(d.get("set", []))
        upstream = [f"{k}={v}" for k, v in dict(d.get("upstream", {})).items()]
        eval_set, eval_grid = list(d.get("eval_set", [])), list(d.get("eval_grid", []))
        seeds, evaluate = d.get("seeds", 1), bool(d.get("eval", True))
        exclude, fit = list(d.get("exclude", [])), bool(d.get("fit_actions", False))
        oat = bool(d.get("one_at_a_time", False))
    else:
        config, grid, sets, upstream = _CONFIG.value, _GRID.value, _SET.value, _UPSTREAM.value
        eval_set, eval_grid, seeds, evaluate = _EVAL_SET.value, _EVAL_GRID.value, 1, _EVAL.value
        exclude, fit, oat = _EXCLUDE.value, _FIT.value, _OAT.value
    if _SEEDS.value is not None:
        seeds = _SEEDS.value
    if not config:
        raise UserError("sweep needs --config=FILE[:knobs] (or --spec=SWEEP_FILE)")
    ups = {}
    for u in upstream:
        stage, _, cfg = u.partition("=")
        if not cfg or stage in ups:
            raise UserError(f"--upstream={u!r}: write STAGE=FILE[:knobs], once per stage")
        ups[stage.strip()] = cfg.strip()
    return SweepSpec(config=config, grid=[parse_axis(g) for g in grid], seeds=int(seeds),
                     fixed=[parse_setting(s) for s in sets], upstream=ups, evaluate=evaluate,
                     eval_settings=dict(parse_setting(s, "--eval_set") for s in eval_set),
                     eval_grid=[parse_axis(g, "--eval_grid") for g in eval_grid],
                     exclude=[parse_exclude(e) for e in exclude], fit_actions=fit,
                     one_at_a_time=oat)


def main(argv):
    quiet_logging()
    if not _ROOT.value:
        raise UserError("sweep needs --root=DIR")
    rest = argv[1:]
    if rest and rest != ["report"]:
        raise UserError(f"unknown sweep subcommand {' '.join(rest)!r} (only: report)")
    if rest == ["report"]:
        from genie_jax.sweep.report import write_report
        r = write_report(_ROOT.value, _METRICS.value or None, _BASELINE.value,
                         _CURVES.value or None, _OUT.value)
        print(f"report of {r['runs_done']}/{r['runs_expected']} finished runs, baseline "
              f"{r['baseline']!r}: {r['paths']['md']}, {r['paths']['csv']}, "
              f"{len(r['paths']['curves'])} curve plots", flush=True)
        return
    from genie_jax.sweep.execute import prepare, run_sweep
    from genie_jax.sweep.spec import parse_shard
    spec, shard = build_spec(), parse_shard(_SHARD.value)
    if _DRY.value:
        plan = prepare(spec, _ROOT.value)
        for up in plan.upstream:
            print(f"upstream {up.stage} {up.name}: {up.config} "
                  + " ".join(f"--config.{k}={v}" for k, v in up.overrides))
        for i, r in enumerate(plan.runs):
            mine = "*" if i % shard[1] == shard[0] else " "
            print(f"{mine} {r.name}: {r.config} " + " ".join(f"--config.{k}={v}"
                                                          for k, v in r.overrides)
                  + (" (actions fit; " if r.fit_actions else " (" if r.evals else "")
                  + (f"evals: {', '.join(e.name for e in r.evals)})" if r.evals else ""))
        print(f"{len(plan.runs)} runs, {len(plan.upstream)} upstream runs; * = shard "
              f"{shard[0]}/{shard[1]}", flush=True)
        return
    out = run_sweep(spec, _ROOT.value, shard=shard, inprocess=_INPROCESS.value,
                    log=lambda m: print(m, flush=True))
    if out.failed:
        raise UserError(f"{len(out.failed)} run(s) failed: {', '.join(sorted(out.failed))} "
                        f"(see RUN/sweep_error.txt); rerun the same command to retry them")


def run(argv: list[str]) -> None:
    run_command(main, argv)
