"""What the experiment configs share: the base sections, the size tables, the CoinRun budget
table, typed knob parsing and the references that tie one section's values to another's.

Each experiment config reads in one file: it picks rows of these tables and sets what is its own.
Values one section takes from another (the dynamics model's codes and patch size from the
tokenizer, its action count from the LAM, image sizes from data.resolution) are ml_collections
references, so one command-line override of the source reaches every copy, e.g.
  --config.tokenizer.model.num_codes=512   also sets model.num_codes of a dynamics config.
"""
import ml_collections
from ml_collections.config_dict.config_dict import _Op

from genie_jax.sharding import DEFAULT_RULES

# ---------------------------------------------------------------------------------------------
# Size tables. Every size is a row of each table below; a config picks its row with the `size`
# knob (`tokenizer.py:size=1b`) and copies nothing. Sizes:
#   test     seconds-long runs for the test suite
#   tiny     CPU runs in minutes on 32x32 procedural video
#   cpu      the tiny models on 64x64 frames (the *_coinrun.py CPU chain)
#   coinrun  Genie's CoinRun study, 64x64
#   200m     every model ~200M parameters
#   1b       a ~1B dynamics model on Genie's tokenizer (~200M) and LAM (~300M)
#   11b      Genie's final model: ~10.1B dynamics, ~200M tokenizer, ~300M LAM
# The three big sizes are for TPU pods (`genie-jax plan` sizes them, see experiments/RESULTS.md):
# 128x128 frames (Genie's 160x90 frames hold 14,400 pixels; ours must be square), patch 4,
# 16-frame clips, bf16 compute on f32 parameters, rematerialised blocks (model.remat='full').
# Their shapes (width, depth, heads) are ours, chosen to hit the paper's parameter totals; PARAMS
# holds the totals. Any size can run its blocks as one nn.scan (model.scan_layers=true).
SIZES = ("test", "tiny", "coinrun", "cpu", "200m", "1b", "11b")
POD_SIZES = ("200m", "1b", "11b")

# Procedural video (the *_coinrun.py configs point data at a dataset directory instead).
DATA = {
    "test": dict(resolution=16, num_frames=4, batch_size=8, train_episodes=16, eval_episodes=4,
                 episode_length=16),
    "tiny": dict(resolution=32, num_frames=4, batch_size=4),
    "coinrun": dict(resolution=64, num_frames=16, batch_size=48),
    "cpu": dict(resolution=64, num_frames=4, batch_size=4),
    "200m": dict(resolution=128, num_frames=16, batch_size=128),
    # 1b: 2 clips per chip of v5p:4x4x2 (batch 256 needs 113 GiB per chip: genie-jax plan)
    "1b": dict(resolution=128, num_frames=16, batch_size=64),
    "11b": dict(resolution=128, num_frames=16, batch_size=512),  # Genie: batch 512
}
# Global batch of a stage where it differs from DATA's.
STAGE_BATCH = {
    "lam": {"tiny": 16, "coinrun": 36},  # coinrun: Genie's CoinRun study
    "dynamics": {"coinrun": 36},
}

# Train length, log/eval/checkpoint cadence, optimizer and VQ dead-code restart period per size.
SCHEDULE = {
    "test": dict(steps=12, log_every=2, eval_every=6, eval_batches=1, checkpoint_every=4,
                 lr=1e-3, warmup_steps=2, restart_dead_after=4),
    # tiny tokenizer: 30.4 dB held-out in 561 s of training on 2 CPU cores
    "tiny": dict(steps=1500, log_every=100, eval_every=500, eval_batches=4, checkpoint_every=500,
                 lr=1e-3, warmup_steps=200, restart_dead_after=100),
    "coinrun": dict(steps=100_000, log_every=50, eval_every=2000, eval_batches=4,
                    checkpoint_every=2000, lr=3e-4, warmup_steps=200, restart_dead_after=100),
}
SCHEDULE["cpu"] = SCHEDULE["tiny"]
for _size in POD_SIZES:  # Genie trained 125k steps
    SCHEDULE[_size] = dict(steps=125_000, log_every=100, eval_every=5000, eval_batches=4,
                           checkpoint_every=2500, lr=3e-4, warmup_steps=2000,
                           restart_dead_after=100)

# ST-ViViT VQ-VAE video tokenizer.
TOKENIZER = {
    "test": dict(patch_size=4, width=32, depth=1, decoder_depth=1, num_heads=2, num_codes=64,
                 code_dim=8, max_frames=8),
    # A 16x16 token grid per frame, as Genie's CoinRun setup (64x64, patch 4), at half the
    # resolution. Patch 4 here (8x8 tokens) plateaus near 26 dB: too few bits per sprite edge.
    "tiny": dict(patch_size=2, width=128, depth=2, decoder_depth=2, num_heads=4, num_codes=1024,
                 code_dim=32, max_frames=16),
    "coinrun": dict(patch_size=4, width=512, depth=8, decoder_depth=8, num_heads=8,
                    num_codes=1024, code_dim=32, max_frames=16),
}
# 64x64 frames: a 16x16 token grid. Every frame coded alone (temporal 'none'): 13% less time per
# step than the ST-ViViT at equal quality, and the sampler decodes only the new frame; with
# error-weighted code restarts (and 10x codebook steps, tokenizer_coinrun.py) it reaches 27.1 dB
# on the quickstart's test clips in 2000 steps (experiments/RESULTS.md, "A per-frame tokenizer").
TOKENIZER["cpu"] = dict(TOKENIZER["tiny"], patch_size=4, temporal="none", restart_sampling="error")
# Pod sizes: bf16 compute, f32 parameters, blocks rematerialised in the backward pass (remat
# policy 'full': each block's input kept, the block rerun; 'save_dots' keeps the projection and
# MLP matmul outputs too, more memory for less recompute: genie-jax plan compares them).
_POD = dict(mlp_ratio=4.0, dtype="bfloat16", remat="full")
# ~200M: 12 ST blocks of width 1024 (Genie's ST-ViViT tokenizer: 205M).
TOKENIZER["200m"] = dict(_POD, patch_size=4, width=1024, depth=6, decoder_depth=6, num_heads=16,
                         num_codes=1024, code_dim=32, max_frames=16)
TOKENIZER["1b"] = TOKENIZER["11b"] = TOKENIZER["200m"]

# Latent action model: the tokenizer's video VQ-VAE with 6 codes (6 latent actions, as Genie's
# CoinRun study) and patch 4: the LAM needs what changed, not pixel detail.
LAM = {size: dict(TOKENIZER[size], patch_size=4, num_codes=6)
       for size in ("test", "tiny", "coinrun")}
# An 8x8 patch grid of a 64x64 frame is enough to see what moved, and keeps the decoder cheap.
# No commitment loss: with it (0.25, even 0.02) the CPU LAM's encoder outputs collapse within
# 500 steps to one direction (cosine > 0.99 between any two), every code lands there and the
# decoder ignores its code; the codes are unit vectors, so the loss has no scale to bound
# (experiments/RESULTS.md, "The LAM's collapse was its commitment loss").
LAM["cpu"] = dict(LAM["tiny"], patch_size=8, commitment=0.0)
# Pod sizes: 8 latent actions and patch 16 (as Genie); ~200M (12 blocks of width 1024) and, at
# 1b and 11b, Genie's ~300M (18 blocks).
LAM["200m"] = dict(TOKENIZER["200m"], patch_size=16, num_codes=8)
LAM["1b"] = LAM["11b"] = dict(LAM["200m"], depth=9, decoder_depth=9)

# MaskGIT dynamics transformer (its codes, actions and patch size come from the tokenizer/LAM).
DYNAMICS = {
    "test": dict(width=32, depth=1, num_heads=2, max_frames=8),
    "tiny": dict(width=128, depth=4, num_heads=4, max_frames=16),
    "coinrun": dict(width=512, depth=12, num_heads=8, max_frames=16),  # Genie's CoinRun: 12 layers
    "200m": dict(_POD, width=1024, depth=12, num_heads=16, max_frames=16),
    "1b": dict(_POD, width=2048, depth=15, num_heads=16, max_frames=16),
    # Genie's 10.1B dynamics; head width 128; 40 heads split evenly over a tensor axis of 2-8.
    "11b": dict(_POD, width=5120, depth=24, num_heads=40, max_frames=16),
}
DYNAMICS["cpu"] = DYNAMICS["tiny"]

# Trainable parameters of each stage's model by size (the dynamics without its frozen LAM), to
# 2 significant figures; tests/test_sizes.py counts them (jax.eval_shape) to within 5%.
PARAMS = {
    "tokenizer": {"test": 40e3, "tiny": 1.2e6, "coinrun": 68e6, "cpu": 0.92e6,  # cpu: no time attn
                  "200m": 200e6, "1b": 200e6, "11b": 200e6},
    "lam": {"test": 41e3, "tiny": 1.1e6, "coinrun": 68e6, "cpu": 1.2e6,
            "200m": 200e6, "1b": 300e6, "11b": 300e6},
    "dynamics": {"test": 22e3, "tiny": 1.4e6, "coinrun": 52e6, "cpu": 1.4e6,
                 "200m": 200e6, "1b": 1.0e9, "11b": 10.1e9},
}

# Device mesh (data, fsdp, tensor) per size; -1 takes the devices left. The CPU sizes are data
# parallel; the pod sizes shard parameters and optimizer state over every device (FSDP), and
# 11b also splits heads and MLP over a tensor axis of 4 (genie-jax plan: experiments/RESULTS.md).
MESH = {size: (-1, 1, 1) for size in ("test", "tiny", "coinrun", "cpu")}
MESH.update({"200m": (1, -1, 1), "1b": (1, -1, 1), "11b": (1, -1, 4)})

# Recorded actions per dataset, for dynamics conditioned on the true actions instead of latent ones
# (knob lam_mode=true_actions): the procedural world's 5 moves, procgen CoinRun's 15 actions.
TRUE_ACTIONS = {"procedural": 5, "coinrun": 15}
LAM_MODES = ("frozen", "cotrain", "true_actions")
LAM_INPUTS = ("pixels", "tokens")  # what the LAM encoder reads (models/lam.py)

# ---------------------------------------------------------------------------------------------
# The CoinRun CPU chain (*_coinrun.py, knob `budget`): train steps of each stage per budget,
# how many times a run evaluates and checkpoints (evenly spaced) and how often it logs.
# CPU minutes on 2 cores, tokenizer / LAM / dynamics: quick ~6-9 / 2.5-4 / 12-15 (`make
# quickstart`), default ~20 / 4 / 20, quality ~55 / 7 / 40 (the CoinRun quality run); smoke:
# seconds (tests). Quick tokenizer steps: see tokenizer_coinrun.py's single frames.
BUDGETS = ("smoke", "quick", "default", "quality")
COINRUN_BUDGET = {
    #                  smoke quick default quality
    "tokenizer": dict(steps=(8, 1250, 3200, 8000), evals=4, log_every=100),  # ~2.5 steps/s
    "lam": dict(steps=(8, 500, 1000, 1500), evals=2, log_every=50),
    "dynamics": dict(steps=(8, 700, 1200, 2400), evals=4, log_every=50,
                     # the decoding's action guidance w: a world trained longer needs less push
                     # (experiments/RESULTS.md, "Guidance on the frontier world")
                     guidance=(3.0, 3.0, 3.0, 1.5)),
}


def pick(choices, knob: str, value: str):
    """choices[value] (a dict) or value (a tuple of choices); a value not among the choices is a
    ValueError naming the knob, the value and the choices."""
    if value not in choices:
        raise ValueError(f"unknown {knob} {value!r} ({', '.join(choices)})")
    return choices[value] if isinstance(choices, dict) else value


def check_size(size: str) -> str:
    """`size` if it is a row of the size tables, else a ValueError listing them."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r} (test, tiny, coinrun), cpu (the models of the "
                         f"CoinRun CPU chain) or a pod size ({', '.join(POD_SIZES)})")
    return size


def get_base(size: str, stage: str = "") -> ml_collections.ConfigDict:
    """The sections every stage has, with the data, schedule and mesh of `size` (DATA, SCHEDULE,
    MESH) and the batch of `stage` (STAGE_BATCH); a stage config adds `model`, `loss` and
    whatever else is its own."""
    data, sched = DATA[check_size(size)], SCHEDULE[size]
    c = ml_collections.ConfigDict()
    c.stage = ""
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "procedural"   # 'procedural' (built in) or 'arrayrecord' (a dataset dir)
    c.data.dir = ""                # for 'arrayrecord'
    c.data.eval_split = "val"
    c.data.seed = 0
    c.data.resolution = 32
    c.data.num_frames = 8
    c.data.batch_size = 16         # global, over all hosts and devices
    c.data.train_episodes = 512    # procedural only
    c.data.eval_episodes = 32      # procedural only
    c.data.episode_length = 64     # procedural only
    c.data.num_sprites = 2         # procedural only
    c.data.worker_count = 0
    c.data.read_threads = 1
    c.data.prefetch = 2
    c.data.update(data)
    c.data.batch_size = STAGE_BATCH.get(stage, {}).get(size, c.data.batch_size)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = sched["lr"]
    c.optim.schedule = "cosine"    # 'cosine' | 'wsd' | 'constant'
    c.optim.warmup_steps = sched["warmup_steps"]
    c.optim.end_lr_frac = 0.1
    c.optim.decay_frac = 0.2       # wsd: fraction of steps spent decaying
    c.optim.weight_decay = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.clip_norm = 1.0
    c.optim.codebook_lr_mult = 1.0 # step-size multiplier for VQ codebooks

    c.train = ml_collections.ConfigDict()
    c.train.steps = sched["steps"]
    c.train.log_every = sched["log_every"]
    c.train.eval_every = sched["eval_every"]
    c.train.eval_batches = sched["eval_batches"]
    c.train.max_minutes = 0.0      # > 0: save and stop after this much wall time
    c.train.microbatches = 1       # gradient accumulation: the batch in this many equal slices

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = sched["checkpoint_every"]
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = MESH[size]      # (data, fsdp, tensor); -1 takes the remaining devices

    c.sharding = ml_collections.ConfigDict()
    c.sharding.rules = [list(r) for r in DEFAULT_RULES]
    return c


def video_vq_model(s: dict, image_size) -> ml_collections.ConfigDict:
    """The model section of a video VQ-VAE (tokenizer or LAM) from a TOKENIZER or LAM row `s` and
    the image size (a tuple or a reference to one)."""
    return ml_collections.ConfigDict(dict(
        image_size=image_size, channels=3, patch_size=s["patch_size"], width=s["width"],
        depth=s["depth"], decoder_depth=s["decoder_depth"], num_heads=s["num_heads"],
        mlp_ratio=s.get("mlp_ratio", 4.0), dropout=0.0, num_codes=s["num_codes"],
        code_dim=s["code_dim"], commitment=s.get("commitment", 0.25),
        restart_sampling=s.get("restart_sampling", "uniform"), quantizer=s.get("quantizer", "vq"),
        fsq_levels=tuple(s.get("fsq_levels", ())), max_frames=s["max_frames"],
        dtype=s.get("dtype", "float32"), param_dtype="float32", remat=s.get("remat", "none"),
        scan_layers=s.get("scan_layers", False),
        attention_impl=ml_collections.FieldReference(None, field_type=str)))


# models/tokenizer.py: 'causal' (ST-ViViT, Genie's) or 'none' (every frame coded alone)
TOKENIZER_TEMPORAL = ("causal", "none")


def tokenizer_model(s: dict, image_size, temporal: str = "") -> ml_collections.ConfigDict:
    """The tokenizer's model section: video_vq_model and its `temporal` (TOKENIZER_TEMPORAL; the
    `temporal` knob of tokenizer configs, `tok_temporal` of the stages that read a tokenizer;
    '' takes the TOKENIZER row's, causal unless the row says otherwise)."""
    m = video_vq_model(s, image_size)
    m.temporal = pick(TOKENIZER_TEMPORAL, "temporal", temporal or s.get("temporal", "causal"))
    return m


TEMPORAL_POS = ("learned", "rope")  # models/dynamics.py; rope: the sampler's rolling KV cache


def dynamics_model(tok: ml_collections.ConfigDict, lam: ml_collections.ConfigDict, shape: dict,
                   action_mode: str, temporal_pos: str = "learned",
                   copy_gate: bool = False) -> ml_collections.ConfigDict:
    """The dynamics model section over a tokenizer and LAM model section (vocabulary, action
    count, image and patch size are references to theirs) from a DYNAMICS row `shape`."""
    pick(TEMPORAL_POS, "temporal_pos", temporal_pos)
    return ml_collections.ConfigDict(dict(
        num_codes=tok.get_oneway_ref("num_codes"), num_actions=lam.get_oneway_ref("num_codes"),
        image_size=tok.get_oneway_ref("image_size"), patch_size=tok.get_oneway_ref("patch_size"),
        width=shape["width"], depth=shape["depth"], num_heads=shape["num_heads"],
        mlp_ratio=shape.get("mlp_ratio", 4.0), dropout=0.0, max_frames=shape["max_frames"],
        action_mode=action_mode, temporal_pos=temporal_pos, copy_gate=bool(copy_gate),
        dtype=shape.get("dtype", "float32"),
        param_dtype="float32", remat=shape.get("remat", "none"), scan_layers=shape.get("scan_layers", False),
        attention_impl=ml_collections.FieldReference(None, field_type=str)))


def dynamics_loss(restart_dead_after: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(mask_min=0.5, mask_max=1.0, next_frame_prob=0.0,
                                          action_dropout=0.0, lam_weight=1.0, lam_vq_weight=1.0,
                                          restart_dead_after=restart_dead_after))


def budget_value(stage: str, key: str, budget: str):
    """COINRUN_BUDGET[stage][key] (one value per budget) at `budget`."""
    return pick(dict(zip(BUDGETS, COINRUN_BUDGET[stage][key])), "budget", budget)


def set_budget(c: ml_collections.ConfigDict, stage: str, budget: str) -> None:
    """Train length and cadence of `stage` under a COINRUN_BUDGET budget."""
    row = COINRUN_BUDGET[stage]
    c.train.steps = budget_value(stage, "steps", budget)
    c.train.log_every = row["log_every"]
    # rounded up, so that a run evaluates and checkpoints exactly `evals` times
    c.train.eval_every = c.checkpoint.every = -(-c.train.steps // row["evals"])


def use_coinrun_data(c: ml_collections.ConfigDict, directory: str) -> None:
    """Read 64x64 CoinRun episodes from an ArrayRecord dataset directory."""
    c.data.source = "arrayrecord"
    c.data.dir = directory
    c.data.resolution = 64


def _if_tokens(_, lam_input, value):
    return value if lam_input == "tokens" else 0


def set_lam_input(lam: ml_collections.ConfigDict, tok: ml_collections.ConfigDict,
                  lam_input: str) -> None:
    """The LAM model section `lam` reads pixels or the tokens of the tokenizer model section
    `tok`. token_codes and token_patch follow the tokenizer's num_codes and patch_size while
    lam.input is 'tokens' and are 0 otherwise, so `--config.lam.model.input=tokens` (or
    `model.input` of a LAM config) alone switches a LAM, and a pixel LAM's meta is unchanged."""
    pick(LAM_INPUTS, "lam input", lam_input)
    lam.input = lam_input
    for key, src in (("token_codes", "num_codes"), ("token_patch", "patch_size")):
        lam[key] = ml_collections.FieldReference(
            0, field_type=int, op=_Op(_if_tokens, [lam.get_ref("input"), tok.get_ref(src)]))


# ---------------------------------------------------------------------------------------------
# References. Configs copy a value with `section.get_oneway_ref(key)`: the copy follows
# section[key] until the copy itself is set, which changes only the copy (so a deliberate
# mismatch stays visible to the stage's own consistency checks).

def _square(_, side):
    return (side, side)


def square_of(section: ml_collections.ConfigDict, key: str) -> ml_collections.FieldReference:
    """A reference to (v, v), v = section[key]: e.g. model.image_size from data.resolution.
    ml_collections has no public op that changes a reference's type (int -> tuple); this builds
    one the way FieldReference.to_int() does (a checked dependency: ml-collections>=1.1,<2)."""
    return ml_collections.FieldReference((0, 0), field_type=tuple,
                                         op=_Op(_square, [section.get_ref(key)]))


# ---------------------------------------------------------------------------------------------
# Knobs: the ':a=1,b=x' after the config file name.

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _typed(key: str, value: str, default):
    try:
        if isinstance(default, bool):  # before int: bool is an int
            if value.lower() not in _TRUE + _FALSE:
                raise ValueError
            return value.lower() in _TRUE
        if isinstance(default, (int, float, str)):
            return type(default)(value)
    except ValueError:
        kind = {bool: "a bool (true/false)", int: "an int", float: "a float"}[type(default)]
        raise ValueError(f"config knob {key}={value!r} is not {kind}") from None
    raise TypeError(f"config knob {key}: default {default!r} is not an int, float, bool or str")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'size=tiny,steps=10' -> knobs, over `defaults`; each knob's type is its default's
    (int, float, bool or str). An unknown knob or a bad value is a ValueError naming it."""
    out = dict(defaults)
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config knob {key!r} in ':{arg}' (known: {sorted(defaults)})")
        if not eq:
            raise ValueError(f"config knob {key!r} in ':{arg}' has no value (write {key}=VALUE)")
        out[key] = _typed(key, value, defaults[key])
    return ml_collections.ConfigDict(out)
