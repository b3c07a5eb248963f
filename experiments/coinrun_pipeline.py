"""The whole Genie pipeline on CoinRun, from nothing: data -> tokenizer -> LAM -> dynamics ->
held-out evaluation -> rollout GIF.

  python experiments/coinrun_pipeline.py --budget=quick     # `make quickstart`: 25-30 min, 2 cores
  python experiments/coinrun_pipeline.py --budget=quality   # the CoinRun quality run
  python experiments/coinrun_pipeline.py --budget=frontier  # the best 2-hour CPU world measured
      # (64-100 min): the quick data and tokenizer, the quality LAM (the quick one, longer),
      # the quality dynamics, and a second eval decoded by 8 sampled MaskGIT steps without
      # action guidance (ROOT/eval_sampled; the first is the config's guided MBR pass, w 1.5)

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
# A budget may share another budget's dataset folder (`data`), give a stage another config
# budget (`stages`), and add an eval decoded by 8 sampled MaskGIT steps, unguided (the decoding
# before 2026-11-28), beside the config's one guided minimum-Bayes-risk pass (`sampled_eval`).
# quick: 400 episodes (under a minute to generate). At the same steps the tokenizer's held-out
# PSNR is 0.5 dB higher than on 100 (experiments/RESULTS.md, "400 episodes"). Splits go by a
# hash of each episode, so the 100-episode set's val and test episodes stay held out, and the
# eval's clips (the first 10 test episodes) are the same.
_QUICK = dict(episodes=400, split="0.8,0.1,0.1", eval_episodes=10, clips_per_episode=3)
BUDGETS = {
    "smoke": dict(episodes=6, split="0.5,0.25,0.25", eval_episodes=1, clips_per_episode=2),
    "quick": _QUICK,
    "quality": dict(episodes=320, split="0.9,0.05,0.05", eval_episodes=12, clips_per_episode=4),
    # experiments/RESULTS.md, "Guidance on the frontier world": 64.2 min on a 2-core VM (99.7
    # on a slow one, "The best parts in one chain"); it beats the still image at every step to
    # 10 on 90 test clips and follows its actions (delta-PSNR 2.89) and the game's controls
    "frontier": dict(_QUICK, data="quick",  # the quickstart's dataset: its folder is reused
                     stages=dict(tokenizer="quick", lam="quality", dynamics="quality"),
                     sampled_eval=True),
}

_BUDGET = flags.DEFINE_enum("budget", "quick", list(BUDGETS), "stage lengths and data size")
_ROOT = flags.DEFINE_string("root", None, "run folder (default runs/coinrun_BUDGET)")
_DATA = flags.DEFINE_string("data", None, "dataset folder (default data/coinrun_BUDGET; "
                            "frontier: data/coinrun_quick)")
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
        "delta_psnr_t4_stderr": r["controllability"].get("delta_psnr_stderr"),
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


def stage_commands(budget: str, data: str, root: str, mode: str = "frozen",
                   length: int | None = None, rollout_frames: int = 10) -> list[tuple[str, list]]:
    """The pipeline's stages in order: (name, genie-jax arguments)."""
    b = BUDGETS[budget]
    cfg = os.path.join(REPO, "experiments", "configs")
    stage_budget = {s: b.get("stages", {}).get(s, budget) for s in ("tokenizer", "lam", "dynamics")}
    knobs = {s: f"dir={data},budget={v}" for s, v in stage_budget.items()}
    tok, lam, dyn = (os.path.join(root, s) for s in ("tok", "lam", "dyn"))
    evals = dict(split="test", episodes=b["eval_episodes"],
                 clips_per_episode=b["clips_per_episode"], rollout_frames=rollout_frames)
    eval_flags = [f"--{k}={v}" for k, v in evals.items()]
    cmds = [("data", ["data", "coinrun", f"--out={data}", f"--episodes={b['episodes']}",
                      f"--length={length or (60 if budget == 'smoke' else 300)}",
                      f"--split={b['split']}", "--workers=2", "--no-progress"]),
            ("tokenizer", ["train", f"--config={cfg}/tokenizer_coinrun.py:{knobs['tokenizer']}",
                           f"--workdir={tok}"])]
    if mode == "frozen":
        cmds.append(("lam", ["train", f"--config={cfg}/lam_coinrun.py:{knobs['lam']}",
                             f"--workdir={lam}"]))
    cmds.append(("dynamics", ["train", f"--config={cfg}/dynamics_coinrun.py:{knobs['dynamics']},"
                              f"tokenizer={tok},lam={lam},lam_mode={mode}", f"--workdir={dyn}"]))
    cmds.append(("eval", ["eval", f"--workdir={dyn}", f"--out={root}/eval", *eval_flags]))
    if b.get("sampled_eval"):
        cmds.append(("eval_sampled", ["eval", f"--workdir={dyn}", f"--out={root}/eval_sampled",
                                      *eval_flags, "--pick=sample", "--steps=8", "--guidance=1"]))
    cmds.append(("sample", ["sample", f"--workdir={dyn}", f"--out={root}/rollout.gif",
                            "--from_clip=0", "--split=test"]))
    return cmds


def main(argv):
    del argv
    from genie_jax.media import write_text
    budget, mode = _BUDGET.value, _LAM_MODE.value
    suffix = "" if mode == "frozen" else "_cotrain"
    root = os.path.abspath(_ROOT.value or f"runs/coinrun_{budget}{suffix}")
    data = os.path.abspath(_DATA.value or f"data/coinrun_{BUDGETS[budget].get('data', budget)}")
    dyn = os.path.join(root, "dyn")
    times: dict[str, float] = {}
    summary = {"budget": budget, "lam_mode": mode, "root": root, "data": data,
               "seconds": times, "finished": False}
    t0 = time.perf_counter()
    try:
        for name, args in stage_commands(budget, data, root, mode, _LENGTH.value,
                                         _ROLLOUT.value):
            _run(name, args, times)
            if name.startswith("eval"):
                key = "heldout" if name == "eval" else f"heldout_{name[len('eval_'):]}"
                summary[key] = _headline(os.path.join(root, name, "eval.json"))
        summary["finished"] = True
    finally:  # a failed stage still leaves the times (and metrics) of the stages before it
        summary["total_seconds"] = round(time.perf_counter() - t0, 1)
        os.makedirs(root, exist_ok=True)
        write_text(os.path.join(root, "pipeline.json"), json.dumps(summary, indent=2))
    total = summary["total_seconds"]
    print(f"\npipeline ({budget}) done in {total / 60:.1f} min: "
          + ", ".join(f"{k} {v / 60:.1f}" for k, v in times.items()) + " (min)")
    for key in [k for k in summary if k.startswith("heldout")]:
        print(f"{key}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in summary[key].items()))
    print(f"wrote {root}/pipeline.json, {root}/eval/ (report, plot, grid, GIF), {root}/rollout.gif")
    print(f"\nplay it in your browser: {_here(_GENIE_JAX)} play --workdir={_here(dyn)}")


if __name__ == "__main__":
    app.run(main)
