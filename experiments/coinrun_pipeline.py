"""The whole Genie pipeline on CoinRun, from nothing: data -> tokenizer -> LAM -> dynamics ->
held-out evaluation -> rollout GIF.

  python experiments/coinrun_pipeline.py --budget=quick     # `make quickstart`: <= 30 CPU minutes
  python experiments/coinrun_pipeline.py --budget=quality   # the <= 2-hour CoinRun quality run

Each stage is one `genie-jax` command (printed before it runs, so any stage can be rerun by
hand). Rerunning the pipeline resumes: data generation skips finished blocks and training resumes
from its newest checkpoint (a finished run returns at once). Writes ROOT/pipeline.json with the
wall time of every stage and the headline held-out metrics; the evaluation report
(eval.json, psnr_per_step.png, rollouts.png, rollouts.gif) is in ROOT/eval and an
LAM-action-driven rollout in ROOT/rollout.gif.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

# Per budget: dataset size and split, and the held-out evaluation. Stage lengths are the configs'
# `budget` knob (experiments/configs/*_coinrun.py; the table is COINRUN_BUDGET in base.py).
BUDGETS = {
    "smoke": dict(episodes=6, split="0.5,0.25,0.25", eval_episodes=1, clips_per_episode=2),
    "quick": dict(episodes=100, split="0.8,0.1,0.1", eval_episodes=10, clips_per_episode=3),
    "quality": dict(episodes=320, split="0.9,0.05,0.05", eval_episodes=12, clips_per_episode=4),
}

_BUDGET = flags.DEFINE_enum("budget", "quick", list(BUDGETS), "stage lengths and data size")
_ROOT = flags.DEFINE_string("root", None, "run folder (default runs/coinrun_BUDGET)")
_DATA = flags.DEFINE_string("data", None, "dataset folder (default data/coinrun_BUDGET)")
_LENGTH = flags.DEFINE_integer("length", None, "max frames per generated episode (default 300; "
                                "60 for --budget=smoke, the seconds-long check of this script)")
_ROLLOUT = flags.DEFINE_integer("rollout_frames", 10, "frames generated per evaluation clip")
_LAM_MODE = flags.DEFINE_enum("lam_mode", "frozen", ["frozen", "cotrain"], "LAM frozen or co-trained")


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name: str, args: list[str], times: dict) -> None:
    cmd = [sys.executable, "-m", "genie_jax", *args]
    print(f"\n=== {name}: genie-jax {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=REPO)  # configs import experiments.configs from the repo
    times[name] = round(time.perf_counter() - t0, 1)
    if rc != 0:
        raise SystemExit(f"stage {name!r} failed (exit code {rc}); fix it and rerun this command "
                         f"to resume")
    print(f"=== {name}: {times[name] / 60:.1f} min", flush=True)


def _headline(eval_json: str) -> dict:
    with open(eval_json) as f:
        r = json.load(f)
    nmi = r.get("action_nmi") or {}
    return {
        "tokenizer_psnr": r["tokenizer"]["psnr"], "tokenizer_ssim": r["tokenizer"]["ssim"],
        "rollout_psnr": r["rollout"]["psnr"],
        "rollout_psnr_random_actions": r["rollout"]["random_actions"]["psnr"],
        "delta_psnr_t4": r["controllability"]["delta_psnr"],
        "delta_psnr_t4_shuffled": r["controllability"].get("delta_psnr_shuffled"),
        "rollout_pooled_psnr": r["rollout"].get("pooled_psnr"),
        "still_image_pooled_psnr": r["repeat_last_frame"].get("pooled_psnr"),
        "lam_code_usage": r["lam"]["code_usage"],
        "action_nmi": nmi.get("nmi"), "action_class_nmi": nmi.get("class_nmi"),
    }


# The genie-jax next to this Python (e.g. .venv/bin/genie-jax after `make quickstart`).
_GENIE_JAX = os.path.join(os.path.dirname(sys.executable), "genie-jax")


def _here(path: str) -> str:
    """A path as the user can paste it here: relative when under the working folder."""
    if path == _GENIE_JAX and not os.path.exists(path):
        return "genie-jax"
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv):
    del argv
    from genie_jax.media import write_text
    budget, mode = _BUDGET.value, _LAM_MODE.value
    b = BUDGETS[budget]
    suffix = "" if mode == "frozen" else "_cotrain"
    root = os.path.abspath(_ROOT.value or f"runs/coinrun_{budget}{suffix}")
    data = os.path.abspath(_DATA.value or f"data/coinrun_{budget}")
    cfg = os.path.join(REPO, "experiments", "configs")
    knobs = f"dir={data},budget={budget}"
    tok, lam, dyn = (os.path.join(root, s) for s in ("tok", "lam", "dyn"))
    times: dict[str, float] = {}
    summary = {"budget": budget, "lam_mode": mode, "root": root, "data": data,
               "seconds": times, "finished": False}
    t0 = time.perf_counter()
    try:
        _run("data", ["data", "coinrun", f"--out={data}", f"--episodes={b['episodes']}",
                      f"--length={_LENGTH.value or (60 if budget == 'smoke' else 300)}",
                      f"--split={b['split']}", "--workers=2", "--no-progress"], times)
        _run("tokenizer", ["train", f"--config={cfg}/tokenizer_coinrun.py:{knobs}",
                           f"--workdir={tok}"], times)
        if mode == "frozen":
            _run("lam", ["train", f"--config={cfg}/lam_coinrun.py:{knobs}", f"--workdir={lam}"],
                 times)
        _run("dynamics", ["train", f"--config={cfg}/dynamics_coinrun.py:{knobs},tokenizer={tok},"
                          f"lam={lam},lam_mode={mode}", f"--workdir={dyn}"], times)
        _run("eval", ["eval", f"--workdir={dyn}", f"--out={root}/eval", "--split=test",
                      f"--episodes={b['eval_episodes']}",
                      f"--clips_per_episode={b['clips_per_episode']}",
                      f"--rollout_frames={_ROLLOUT.value}"], times)
        summary["heldout"] = _headline(os.path.join(root, "eval", "eval.json"))
        _run("sample", ["sample", f"--workdir={dyn}", f"--out={root}/rollout.gif",
                        "--from_clip=0", "--split=test"], times)
        summary["finished"] = True
    finally:  # a failed stage still leaves the times (and metrics) of the stages before it
        summary["total_seconds"] = round(time.perf_counter() - t0, 1)
        os.makedirs(root, exist_ok=True)
        write_text(os.path.join(root, "pipeline.json"), json.dumps(summary, indent=2))
    total = summary["total_seconds"]
    print(f"\npipeline ({budget}) done in {total / 60:.1f} min: "
          + ", ".join(f"{k} {v / 60:.1f}" for k, v in times.items()) + " (min)")
    print("held-out: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in summary["heldout"].items()))
    print(f"wrote {root}/pipeline.json, {root}/eval/ (report, plot, grid, GIF), {root}/rollout.gif")
    print(f"\nplay it in your browser: {_here(_GENIE_JAX)} play --workdir={_here(dyn)}")


if __name__ == "__main__":
    app.run(main)
