"""The Genie ablations at CPU size on CoinRun, as one `genie-jax sweep`.

  # the dataset, once (as `make quickstart` makes it; or reuse data/coinrun_quick):
  genie-jax data coinrun --out=data/coinrun --episodes=400 --length=300 \
      --split=0.8,0.1,0.1 --workers=2
  genie-jax sweep --spec=experiments/sweeps/genie_coinrun.py:dir=data/coinrun,budget=quick \
      --root=runs/sweep_genie_coinrun [--shard=I/N]
  genie-jax sweep report --root=runs/sweep_genie_coinrun

The design is one change at a time (one_at_a_time): the baseline is the quickstart world (the
first value of each axis: additive actions, a LAM trained first and frozen, 6 latent actions, a
LAM that reads pixels; its loss is lam_coinrun.py's, change-weighted since 2026-11-28, and its
tokenizer trains on single frames since then too: the table in experiments/RESULTS.md, "The
Genie ablations", was made with the plain MSE, 4-frame tokenizer windows and 100 episodes), and
each other row changes one axis from it:
  :action_mode           add | token          how the dynamics is conditioned on the action
                         (Genie adds the action's embedding; token is one more token per frame)
  :lam_mode              frozen | cotrain | true_actions   LAM trained first and frozen, trained
                         with the dynamics, or no LAM: the 15 recorded procgen actions (the
                         ablation row; GenieRedux-G: 33.41 dB with true actions vs 25.51 latent)
  lam.model.num_codes    6 | 8                latent actions (one LAM run per value, shared)
  lam.model.input        pixels | tokens      what the LAM encoder reads: frames, or the frozen
                         tokenizer's codes of them (Genie: pixels 1.91 vs tokens 1.33 delta-PSNR
                         on Platformers); the token LAM is trained after the sweep's tokenizer
  eval-only: MaskGIT steps 4 | 8 | 25 at evaluation, sampled and unguided (one `genie-jax eval`
    each, no retraining)
Every latent-action run first gets `genie-jax actions fit` (CoinRun's 6 control classes -> latent
ids, fitted on the val split), so its evaluation also reports the delta-PSNR of rollouts driven by
the clips' true controls (eval.true_actions.delta_psnr), comparable with the true_actions row.

Size: 6 variants x seeds (2) dynamics runs, + 1 tokenizer and 3 LAM runs shared by all (or the
tokenizer run named by the `tokenizer` knob, e.g. the quickstart's). CPU time at budget=quick on
2 cores: about 16 min per dynamics run with its 3 evaluations, about 3.3 h for 2 seeds
(experiments/RESULTS.md, "The Genie ablations"). `--shard=0/2` is every seed-0 run (seeds are the
inner loop), so `--shard=0/2` then `--shard=1/2` gives a 1-seed table early.
Knobs: dir (dataset), budget (smoke|quick|default|quality), seeds, episodes and clips
(held-out evaluation clips: episodes x clips per episode), tokenizer (a trained tokenizer run of
this dataset and budget to reuse, e.g. runs/coinrun_quick/tok; default: train one),
tok_temporal (that tokenizer's kind, causal|none; default: the CPU tokenizer's, none).
"""


def get_sweep(arg=None):
    from experiments.configs import base
    knobs = base.parse_arg(arg, dir="data/coinrun", budget="quick", seeds=2, episodes=10,
                           clips=3, tokenizer="", tok_temporal="")
    base.pick(base.BUDGETS, "budget", knobs.budget)
    data = f"dir={knobs.dir},budget={knobs.budget}"
    cfg = "experiments/configs"
    kind = f",tok_temporal={knobs.tok_temporal}" if knobs.tok_temporal else ""
    upstream = {"lam": f"{cfg}/lam_coinrun.py:{data}{kind}"}
    if knobs.tokenizer:  # reuse a trained tokenizer run, read through the dynamics config
        data += f"{kind},tokenizer={knobs.tokenizer}"
    else:
        upstream["tokenizer"] = (f"{cfg}/tokenizer_coinrun.py:{data}"
                                 + (f",temporal={knobs.tok_temporal}" if kind else ""))
        data += kind
    return dict(
        config=f"{cfg}/dynamics_coinrun.py:{data}",
        upstream=upstream,
        grid=[":action_mode=add,token", ":lam_mode=frozen,cotrain,true_actions",
              "lam.model.num_codes=6,8", "lam.model.input=pixels,tokens"],
        one_at_a_time=True,
        seeds=knobs.seeds,
        # the MaskGIT steps axis samples at the temperature, unguided (as measured; the
        # config's own decoding is one guided MBR pass)
        eval_set=["split=test", f"episodes={knobs.episodes}",
                  f"clips_per_episode={knobs.clips}", "rollout_frames=10", "pick=sample",
                  "guidance=1"],
        eval_grid=["steps=4,8,25"],
        fit_actions=True,  # the control a player feels: rollouts by CoinRun's own controls
    )
