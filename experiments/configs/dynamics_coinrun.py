"""MaskGIT dynamics on CoinRun, on the frozen CoinRun tokenizer and LAM (CPU size).

Run (after tokenizer_coinrun.py and lam_coinrun.py with the same dir and budget):
  genie-jax train --config=experiments/configs/dynamics_coinrun.py:dir=data/coinrun,tokenizer=runs/tok_coinrun,lam=runs/lam_coinrun \
      --workdir=runs/dyn_coinrun
Knobs: dir, budget (as the tokenizer and LAM configs: smoke, seconds; quick, ~12 CPU minutes,
the `make quickstart` stage; default, ~20; quality, ~40, the dynamics stage of the quality run;
train steps: base.COINRUN_BUDGET), tokenizer and lam (run folders), lam_mode (frozen|cotrain|
true_actions: the 15 recorded procgen actions condition the dynamics, no LAM),
lam_input (pixels|tokens: a token-input LAM, lam_coinrun.py:input=tokens),
tok_temporal (causal|none: the tokenizer run's `temporal` knob, tokenizer_coinrun.py; default
none, the CPU tokenizer's; a run made before 2026-11-27 is causal),
action_mode (add|token; add by default here: at the quick budget the action added to every patch
is used (held-out delta-PSNR 1.6 dB on val) where the action token is not yet (0.6), see
experiments/RESULTS.md) and temporal_pos (learned|rope), as dynamics.py. The shapes are the
CPU-size ones of tokenizer_coinrun.py and lam_coinrun.py (base.TOKENIZER["cpu"], base.LAM["cpu"]; a mismatching run is refused by its
checkpoint meta); the dynamics model follows --config.tokenizer.model.X and
--config.lam.model.num_codes overrides by reference, as in dynamics.py.
Frames are 4-frame windows, as the tokenizer was trained on (a causal tokenizer's temporal
position embeddings past frame 4 are untrained, so longer windows would encode to
off-distribution tokens; a per-frame one has none).
copy_gate (true|false, default false): a learned gate on the previous frame's token at each
patch (models/dynamics.py; experiments/RESULTS.md "copy gate").
"""
import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = base.parse_arg(arg, dir="data/coinrun", budget="default",
                           tokenizer="runs/tok_coinrun", lam="runs/lam_coinrun",
                           lam_mode="frozen", action_mode="add", temporal_pos="learned",
                           lam_input="pixels", tok_temporal="", copy_gate=False)
    base.pick(base.LAM_MODES, "lam_mode", knobs.lam_mode)
    base.pick(("token", "add"), "action_mode", knobs.action_mode)
    c = base.get_base("tiny")  # the tokenizer's frames (4-frame windows) and optimizer
    c.stage = "dynamics"
    base.use_coinrun_data(c, knobs.dir)
    c.data.batch_size = 8
    # '' or a `genie-jax data tokenize` folder: train on cached tokens (stages/dynamics.py)
    c.data.token_cache = ""
    base.set_budget(c, "dynamics", knobs.budget)

    c.tokenizer = ml_collections.ConfigDict(dict(
        workdir=knobs.tokenizer,
        model=base.tokenizer_model(base.TOKENIZER["cpu"],
                                   image_size=base.square_of(c.data, "resolution"),
                                   temporal=knobs.tok_temporal)))
    tok = c.tokenizer.model
    c.lam = ml_collections.ConfigDict(dict(
        mode=knobs.lam_mode, workdir=knobs.lam,
        model=base.video_vq_model(base.LAM["cpu"], image_size=tok.get_oneway_ref("image_size"))))
    base.set_lam_input(c.lam.model, tok, knobs.lam_input)

    shape = base.DYNAMICS["tiny"]
    c.model = base.dynamics_model(tok, c.lam.model, shape, knobs.action_mode, knobs.temporal_pos,
                                  knobs.copy_gate)
    if knobs.lam_mode == "true_actions":  # the ablation: recorded actions, no LAM
        c.model.num_actions = base.TRUE_ACTIONS["coinrun"]
    c.loss = base.dynamics_loss(base.SCHEDULE["tiny"]["restart_dead_after"])
    # Half the samples mask one whole frame after a clear past (the sampler's first step): there
    # the action is the only clue to where the view moved. With action_mode add, held-out
    # delta-PSNR at the quick budget 1.6 -> 3.9 dB (val; experiments/RESULTS.md).
    c.loss.next_frame_prob = 0.5
    # How eval, play and sample decode this world (their --pick/--steps/--guidance override it):
    # one MaskGIT pass picking each token by minimum Bayes risk, steered by action guidance w
    # (the frame's action against "no action"). w 3 on the quickstart world, against 8 sampled
    # steps (test clips, eval seeds 0-2): delta-PSNR(t=4) 1.16 against 0.66 dB, rollout PSNR
    # 15.27 against 13.60, above the still image, in 2.4x less eval time (experiments/RESULTS.md,
    # "Action guidance"). A world trained longer needs less push: w per budget is in
    # base.COINRUN_BUDGET (1.5 at the quality budget: "Guidance on the frontier world").
    c.sampling = ml_collections.ConfigDict(dict(
        steps=1, pick="mbr", guidance=base.budget_value("dynamics", "guidance", knobs.budget),
        temperature=1.0, schedule="cosine",
        max_frames=c.data.get_oneway_ref("num_frames")))
    return c
