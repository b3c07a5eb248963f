"""`genie-jax sweep report`: what a sweep measured, per variant, over its seeds.

Rows are variants: a grid point (and, with an eval-only axis, one of its evaluations); the seeds
of a variant are averaged. Metrics are named by their file and dotted key:
  eval.KEY      RUN/eval*/eval.json (e.g. eval.rollout.psnr, eval.controllability.delta_psnr)
  summary.KEY   RUN/summary.json (e.g. summary.eval.ce: the final held-out eval of training)
  actions.KEY   RUN/action_map.json of `genie-jax actions fit` (e.g. actions.heldout.accuracy:
                how often the map from the game's controls to latent actions is right on the
                held-out split, beside actions.heldout.chance)
For each metric: mean, sample standard deviation over seeds (blank with one seed) and the
difference of the mean from the baseline variant's (default: every axis at its first value).
Only finished runs (RUN/sweep_run.json) count; the report says how many there are.

Writes ROOT/report/report.md, report.csv and curves_SPLIT_KEY.png: the learning curves of
RUN/metrics.jsonl, one line per grid point (the mean over its seeds at each logged step).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os

import numpy as np

from genie_jax import media
from genie_jax.errors import UserError
from genie_jax.sweep.execute import DONE, read_sweep_json
from genie_jax.sweep.spec import SweepSpec, grid_points, join_name, slug

# The default columns: what the Genie ablations compare (any other key: --metrics).
DEFAULT_EVAL_METRICS = (
    "rollout.psnr", "rollout.psnr_per_step.t4", "rollout.psnr_per_step.t10",
    "repeat_last_frame.psnr", "repeat_last_tokens.psnr", "controllability.delta_psnr",
    "true_actions.delta_psnr", "tokenizer.psnr", "action_nmi.class_nmi", "action_probe.accuracy")
DEFAULT_ACTION_METRICS = ("heldout.balanced_accuracy",)
DEFAULT_SUMMARY_METRICS = ("eval.ce", "train_seconds")
CURVE_SKIP = ("lr", "steps_per_s", "frames_per_s")


def flatten(tree, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a JSON tree by dotted key (strings, nulls and lists left out, except a
    per-step list `X_per_step`, whose value at step t (1-based) is `X_per_step.tT`)."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if str(k).endswith("_per_step") and isinstance(v, list):
                out.update({f"{prefix}{k}.t{i + 1}": float(x) for i, x in enumerate(v)
                            if isinstance(x, (int, float)) and not isinstance(x, bool)})
                continue
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        out[prefix[:-1]] = float(tree)
    return out


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def collect(root: str) -> tuple[SweepSpec, list[dict]]:
    """-> (the sweep, one record per finished run and evaluation:
    {run, variant, eval, label, seed, metrics: {name: value}, workdir})."""
    saved = read_sweep_json(root)
    if saved is None:
        raise UserError(f"{root} holds no sweep.json: not a sweep root")
    spec = SweepSpec.from_json(saved)
    runs_dir = os.path.join(root, "runs")
    records = []
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        w = os.path.join(runs_dir, name)
        done = _read_json(os.path.join(w, DONE))
        if not done:
            continue
        s = _read_json(os.path.join(w, "summary.json")) or {}
        s.pop("eval_history", None)  # per-eval lists: the curves show them
        summary = {f"summary.{k}": v for k, v in flatten(s).items()}
        amap = _read_json(os.path.join(w, "action_map.json")) or {}
        summary.update({f"actions.{k}": v for k, v in flatten(amap.get("info") or {}).items()
                        if k.startswith(("heldout.", "fit."))})
        evals = done.get("evals") or {}
        for ename, e in (evals.items() if evals else [(None, None)]):
            metrics = dict(summary)
            if e is not None:
                r = _read_json(os.path.join(e["out"], "eval.json")) or {}
                metrics.update({f"eval.{k}": v for k, v in flatten(
                    {k: v for k, v in r.items() if k not in ("settings", "workdir")}).items()})
            label = done["variant"] if not e or not e["point"] else \
                f"{done['variant']} [eval {ename[len('eval_'):]}]"
            records.append({"run": name, "variant": done["variant"], "eval": ename,
                            "label": label, "seed": int(done["seed"]), "metrics": metrics,
                            "workdir": w})
    return spec, records


def grid_variants(spec: SweepSpec) -> list[str]:
    """Variant names in the sweep's order (points the sweep leaves out left out)."""
    return [join_name([slug(k, v) for k, v in p.items()]) for p in grid_points(spec)]


def expected_runs(spec: SweepSpec) -> int:
    return len(grid_variants(spec)) * spec.seeds


def order_records(spec: SweepSpec, records: list[dict]) -> list[dict]:
    """Grid order (then eval-only variants in their order, then seed), not folder-name order."""
    variants = {v: i for i, v in enumerate(grid_variants(spec))}
    evals = list(itertools.product(*[vals for _, vals in spec.eval_grid]))
    enames = {"eval_" + join_name([slug(k, v) for (k, _), v in zip(spec.eval_grid, e)]): i
              for i, e in enumerate(evals)}
    return sorted(records, key=lambda r: (variants.get(r["variant"], len(variants)),
                                          enames.get(r["eval"], 0), r["seed"]))


def baseline_label(spec: SweepSpec) -> str:
    variant = join_name([slug(k, vals[0]) for k, vals in spec.grid])
    if spec.eval_grid:
        ev = join_name([slug(k, vals[0]) for k, vals in spec.eval_grid])
        return f"{variant} [eval {ev}]"
    return variant


def _std(xs: list[float]):
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else None


def summarize(records: list[dict], metrics: list[str], baseline: str) -> list[dict]:
    """Per label (in first-seen order): seeds and per metric mean, std and delta from baseline."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    rows = []
    for label in labels:
        rs = [r for r in records if r["label"] == label]
        row = {"label": label, "seeds": sorted(r["seed"] for r in rs), "stats": {}}
        for m in metrics:
            xs = [r["metrics"][m] for r in rs if m in r["metrics"]
                  and math.isfinite(r["metrics"][m])]
            row["stats"][m] = {"mean": float(np.mean(xs)) if xs else None, "std": _std(xs),
                               "n": len(xs)}
        rows.append(row)
    base = next((r for r in rows if r["label"] == baseline), None)
    for row in rows:
        for m, st in row["stats"].items():
            b = base["stats"][m]["mean"] if base else None
            st["delta"] = None if b is None or st["mean"] is None else st["mean"] - b
    return rows


def _f(x, signed: bool = False) -> str:
    if x is None:
        return ""
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def markdown(rows, metrics, baseline, spec, n_done, n_expected, root) -> str:
    lines = [f"# Sweep report: {root}", "",
             f"config `{spec.config}`; grid " + "; ".join(f"`{k}` = {', '.join(v)}"
                                                      for k, v in spec.grid)
             + ("; eval-only " + "; ".join(f"`{k}` = {', '.join(v)}" for k, v in spec.eval_grid)
                if spec.eval_grid else "")
             + f"; seeds {spec.seeds}.",
             f"{n_done} of {n_expected} runs finished. Cells: mean ± std over seeds "
             f"(std: sample, blank with one seed) and, below, the difference from the baseline "
             f"`{baseline}`.", ""]
    head = ["variant", "seeds", *metrics]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in rows:
        cells = [f"`{row['label']}`" + (" (baseline)" if row["label"] == baseline else ""),
                 ",".join(map(str, row["seeds"]))]
        for m in metrics:
            st = row["stats"][m]
            if st["mean"] is None:
                cells.append("")
                continue
            txt = _f(st["mean"]) + (f" ± {_f(st['std'])}" if st["std"] is not None else "")
            if row["label"] != baseline and st["delta"] is not None:
                txt += f"<br>Δ {_f(st['delta'], True)}"
            cells.append(txt)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows, metrics) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["variant", "seeds"]
               + [f"{m}_{s}" for m in metrics for s in ("mean", "std", "delta")])
    for row in rows:
        w.writerow([row["label"], " ".join(map(str, row["seeds"]))]
                   + [_f(row["stats"][m][s], False) for m in metrics
                      for s in ("mean", "std", "delta")])
    return buf.getvalue()


def read_curves(workdir: str) -> dict[str, dict[int, float]]:
    """'split/key' -> {step: value} of RUN/metrics.jsonl."""
    out: dict[str, dict[int, float]] = {}
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                for k, v in rec.items():
                    if k in ("step", "split") or k in CURVE_SKIP or not isinstance(v, (int, float)):
                        continue
                    out.setdefault(f"{rec.get('split', '')}/{k}", {})[int(rec["step"])] = float(v)
    except OSError:
        pass
    return out


def curve_plots(records, out_dir: str, curves: list[str] | None) -> list[str]:
    """One PNG per curve: a line per grid point, the mean over its seeds at each step."""
    per_run = {}
    for r in records:
        per_run.setdefault(r["run"], (r["variant"], read_curves(r["workdir"])))
    names = curves or sorted({c for _, cs in per_run.values() for c in cs
                              if c == "train/loss" or c.startswith("eval/")})
    paths = []
    for c in names:
        by_variant: dict[str, list[dict]] = {}
        for variant, cs in per_run.values():
            if c in cs:
                by_variant.setdefault(variant, []).append(cs[c])
        if not by_variant:
            continue
        steps = sorted({s for runs in by_variant.values() for r in runs for s in r})
        series = {v: [float(np.mean([r[s] for r in runs if s in r])) if any(s in r for r in runs)
                      else float("nan") for s in steps] for v, runs in by_variant.items()}
        img = media.line_plot(series, x=steps, title=f"{c} (mean over seeds)", xlabel="step",
                              ylabel=c, size=(760, 460))
        fname = "curves_" + c.replace("/", "_") + ".png"
        paths.append(media.write_png(os.path.join(out_dir, fname), img))
    return paths


def write_report(root: str, metrics: list[str] | None = None, baseline: str | None = None,
                 curves: list[str] | None = None, out: str | None = None) -> dict:
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise UserError(f"--root={root!r} does not exist")
    spec, records = collect(root)
    records = order_records(spec, records)
    if not records:
        raise UserError(f"{root}: no finished run yet (no runs/*/{DONE})")
    available = sorted({m for r in records for m in r["metrics"]})
    if metrics:
        missing = [m for m in metrics if m not in available]
        if missing:
            raise UserError(f"metric(s) {', '.join(missing)} found in no finished run "
                            f"(available: {', '.join(available)})")
    else:
        evaluated = any(m.startswith("eval.") for m in available)
        wanted = ([f"eval.{m}" for m in DEFAULT_EVAL_METRICS]
                  + [f"actions.{m}" for m in DEFAULT_ACTION_METRICS]
                  + ([f"summary.{m}" for m in DEFAULT_SUMMARY_METRICS] if evaluated else
                     # no `genie-jax eval` (e.g. a tokenizer sweep): the trainer's own evals
                     [m for m in available if m.startswith("summary.eval.")]
                     + ["summary.train_seconds"]))
        metrics = [m for m in wanted if m in available]
    labels = list(dict.fromkeys(r["label"] for r in records))
    base = baseline or baseline_label(spec)
    if baseline and baseline not in labels:
        raise UserError(f"--baseline={baseline!r} is no finished variant ({', '.join(labels)})")
    rows = summarize(records, metrics, base)
    out = out or os.path.join(root, "report")
    os.makedirs(out, exist_ok=True)
    n_done = len({r["run"] for r in records})
    paths = {"md": media.write_text(os.path.join(out, "report.md"),
                                    markdown(rows, metrics, base, spec, n_done,
                                             expected_runs(spec), root)),
             "csv": media.write_text(os.path.join(out, "report.csv"), csv_text(rows, metrics))}
    paths["curves"] = curve_plots(records, out, curves)
    return {"rows": rows, "metrics": metrics, "baseline": base, "runs_done": n_done,
            "runs_expected": expected_runs(spec), "paths": paths}
