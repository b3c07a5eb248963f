"""MaskGIT dynamics on a frozen tokenizer, conditioned on latent actions (frozen or co-trained LAM).

Run (after the tokenizer, and for lam_mode=frozen the LAM, of the same size):
  genie-jax train --config=experiments/configs/tokenizer.py:size=tiny --workdir=runs/tok
  genie-jax train --config=experiments/configs/lam.py:size=tiny --workdir=runs/lam
  genie-jax train --config=experiments/configs/dynamics.py:size=tiny --workdir=runs/dyn
  genie-jax train --config=experiments/configs/dynamics.py:size=tiny,lam_mode=cotrain \
      --workdir=runs/dyn_cotrain
  genie-jax train --config=experiments/configs/dynamics.py:size=tiny,action_mode=add \
      --workdir=runs/dyn_add                       # the action-conditioning ablation
Knobs: size (test|tiny|cpu|coinrun, or 200m|1b|11b for TPU pods: base.py),
  tokenizer (tokenizer run folder, default runs/tok),
  lam (LAM run folder, default runs/lam; unused when co-training), lam_mode (frozen|cotrain|
  true_actions: the recorded actions condition the dynamics, no LAM; model.num_actions = 5),
  action_mode (token: each action is an extra token | add: added to the frame's tokens),
  temporal_pos (learned: absolute temporal position embeddings | rope: rotary ones, which let
  the sampler keep a rolling KV cache across buffer slides; a different model),
  lam_input (pixels | tokens: the LAM reads the tokenizer's codes, Genie's LAM-input ablation;
  the LAM run must be one, lam.py:input=tokens; also --config.lam.model.input=tokens),
  tok_temporal (causal | none: the tokenizer run's `temporal` knob, tokenizer.py).
Data, schedule and the tokenizer and LAM shapes are those of tokenizer.py and lam.py of the same
size (base.py). If those runs used other values, override their sections and the dynamics model
follows by reference: --config.tokenizer.model.num_codes, .patch_size and .image_size set the
same fields of `model` (.image_size also lam.model.image_size), --config.lam.model.num_codes sets
model.num_actions, and --config.data.resolution sets every image size.
copy_gate (true|false, default false): a learned gate on the previous frame's token at each
patch (models/dynamics.py; experiments/RESULTS.md "copy gate").
"""
import ml_collections

from experiments.configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    knobs = base.parse_arg(arg, size="tiny", tokenizer="runs/tok", lam="runs/lam",
                           lam_mode="frozen", action_mode="token", temporal_pos="learned",
                           lam_input="pixels", tok_temporal="", copy_gate=False)
    base.pick(base.LAM_MODES, "lam_mode", knobs.lam_mode)
    base.pick(("token", "add"), "action_mode", knobs.action_mode)
    size = knobs.size
    # the frames, schedule and optimizer the tokenizer of this size had
    c = base.get_base(size, "dynamics")
    c.stage = "dynamics"
    # '' or a `genie-jax data tokenize` folder: train on cached tokens (stages/dynamics.py)
    c.data.token_cache = ""

    c.tokenizer = ml_collections.ConfigDict(dict(
        workdir=knobs.tokenizer,
        model=base.tokenizer_model(base.TOKENIZER[size],
                                   image_size=base.square_of(c.data, "resolution"),
                                   temporal=knobs.tok_temporal)))
    tok = c.tokenizer.model
    c.lam = ml_collections.ConfigDict(dict(
        mode=knobs.lam_mode, workdir=knobs.lam,
        model=base.video_vq_model(base.LAM[size], image_size=tok.get_oneway_ref("image_size"))))
    base.set_lam_input(c.lam.model, tok, knobs.lam_input)

    shape = base.DYNAMICS[size]
    c.model = base.dynamics_model(tok, c.lam.model, shape, knobs.action_mode, knobs.temporal_pos,
                                  knobs.copy_gate)
    if knobs.lam_mode == "true_actions":  # the ablation: recorded actions, no LAM
        c.model.num_actions = base.TRUE_ACTIONS["procedural"]
    c.loss = base.dynamics_loss(base.SCHEDULE[size]["restart_dead_after"])
    c.sampling = ml_collections.ConfigDict(dict(
        steps={"test": 4, "tiny": 8, "cpu": 8}.get(size, 25),  # Genie: 25 MaskGIT steps
        temperature=1.0 if size in ("test", "tiny", "cpu") else 2.0, schedule="cosine",
        max_frames=c.data.get_oneway_ref("num_frames")))
    return c
