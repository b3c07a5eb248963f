"""The Genie ablations at CPU size on CoinRun, as one `genie-jax sweep` (not run yet).

  # the dataset, once (as `make quickstart` makes it; or reuse data/coinrun_quick):
  genie-jax data coinrun --out=data/coinrun --episodes=100 --length=300 \
      --split=0.8,0.1,0.1 --workers=2
  genie-jax sweep --spec=experiments/sweeps/genie_coinrun.py:dir=data/coinrun,budget=quick \
      --root=runs/sweep_genie_coinrun [--shard=I/N]
  genie-jax sweep report --root=runs/sweep_genie_coinrun

Axes (the first value of each is the baseline: Genie's CoinRun setup):
  :action_mode           token | add          how the dynamics is conditioned on the action
  :lam_mode              frozen | cotrain | true_actions   LAM trained first and frozen, trained
                         with the dynamics, or no LAM: the 15 recorded procgen actions (the
                         ablation row; GenieRedux-G: 33.41 dB with true actions vs 25.51 latent)
  lam.model.num_codes    6 | 8                latent actions (one LAM run per value, shared)
  eval-only: MaskGIT steps 4 | 8 | 25 at evaluation (one `genie-jax eval` each, no retraining)
Every latent-action run first gets `genie-jax actions fit` (CoinRun's 6 control classes -> latent
ids, fitted on the val split), so its evaluation also reports the delta-PSNR of rollouts driven by
the clips' true controls (eval.true_actions.delta_psnr), comparable with the true_actions row.
Not an axis: the LAM's input (pixels, as now, vs the tokenizer's tokens): the LAM takes pixels
only; a token-input LAM is not built.
true_actions ignores lam.model.num_codes, so its num_codes=8 point is excluded (a duplicate).

Size: per seed 10 dynamics runs, + 1 tokenizer and 2 LAM runs shared by all; knob seeds (2).
CPU time at budget=quick on 2 cores, estimated from experiments/RESULTS.md (not measured as a
sweep): tokenizer ~8 min, LAM ~2.5 min each, dynamics ~12 min each, its 3 evaluations ~5 min
(1.2 min for 30 clips at 8 MaskGIT steps, scaled by steps): about 6 h for 2 seeds. `--shard=I/N` splits it over N machines sharing the root.
Knobs: dir (dataset), budget (smoke|quick|default|quality), seeds, episodes and clips
(held-out evaluation clips: episodes x clips per episode).
"""


def get_sweep(arg=None):
    from experiments.configs import base
    knobs = base.parse_arg(arg, dir="data/coinrun", budget="quick", seeds=2, episodes=10,
                           clips=3)
    base.pick(base.BUDGETS, "budget", knobs.budget)
    data = f"dir={knobs.dir},budget={knobs.budget}"
    cfg = "experiments/configs"
    return dict(
        config=f"{cfg}/dynamics_coinrun.py:{data}",
        upstream={"tokenizer": f"{cfg}/tokenizer_coinrun.py:{data}",
                  "lam": f"{cfg}/lam_coinrun.py:{data}"},
        grid=[":action_mode=token,add", ":lam_mode=frozen,cotrain,true_actions",
              "lam.model.num_codes=6,8"],
        exclude=[":lam_mode=true_actions lam.model.num_codes=8"],
        seeds=knobs.seeds,
        eval_set=["split=test", f"episodes={knobs.episodes}",
                  f"clips_per_episode={knobs.clips}", "rollout_frames=10"],
        eval_grid=["steps=4,8,25"],
        fit_actions=True,  # the control a player feels: rollouts by CoinRun's own controls
    )
