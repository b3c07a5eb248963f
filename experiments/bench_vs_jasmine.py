"""Train steps side by side: genie_jax against Jasmine (github.com/p-doom/jasmine) at equal shapes,
in one process on one jax, so the ratio measures the code and not the jax version or the day.

  python experiments/bench_vs_jasmine.py --jasmine_dir=PATH/TO/jasmine \
      --out=bench_results/vs_jasmine.json [--stages=tokenizer,lam,dynamics] \
      [--shapes=small,large] [--steps=5] [--rounds=2]

PATH/TO/jasmine is a Jasmine checkout (the folder that holds `jasmine/models/tokenizer.py`). Its
models import both `jasmine.utils...` and `utils...`, so both that folder and its `jasmine/` are put
on sys.path. Jasmine's models (flax.nnx) need einops and a flax with `nnx.List` (0.12 or later);
our environment has both. Nothing of Jasmine is copied here: its modules are imported from the
checkout and driven by the train steps below, which do what its train scripts do per step.

Each (stage, shape) row builds both frameworks' models with the same shape, compiles each step
once, then times them alternately, `--rounds` rounds of `--steps` steps each, and reports the
median step time of each and their ratio (Jasmine's time over ours: above 1 means we are faster).
  - genie_jax: the trainer's own engine and step (experiments/bench_lib.EngineStep:
    its loader's batches, random frozen params for the frozen stages).
  - Jasmine: its TokenizerVQVAE / LatentActionModel / DynamicsMaskGIT, f32 compute (Jasmine's
    default is bf16, which XLA:CPU runs slower than f32), no flash attention (cuDNN only), adamw
    with Jasmine's b1=b2=0.9 and weight decay 1e-4, jitted with the model state donated. The
    dynamics step runs the frozen tokenizer's and LAM's encoders, as Jasmine's Genie does in
    training, and differentiates the dynamics only. Per-step metrics that its scripts compute
    inside the step (PSNR, SSIM, codebook usage) are left out, which can only flatter Jasmine.
Shapes: `small` is our `tiny` configs' (tokenizer b4 x T4 32x32, patch 2, width 128, 2+2 layers;
LAM b16, patch 4; dynamics 4 layers); `large` is issue 10's larger size: b2 x T16, 64x64 with
patch 4 (256 tokens), width 512, 4 layers (4 + 4 for the tokenizer and LAM); `test` is for tests.
Both sides: 1024 codes of dim 32, 6 latent actions, MLP width 4x, 8 heads at `large`.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.bench_lib import EngineStep, matmul_peak, step_flops  # noqa: E402
from experiments.bench_shapes import (CODE_DIM, MLP_RATIO, NUM_ACTIONS,  # noqa: E402,F401
                                      NUM_CODES, SHAPES, _shape, ours_config)

_JASMINE = flags.DEFINE_string("jasmine_dir", "", "a Jasmine checkout (needed unless "
                               "--frameworks=genie_jax)")
_OUT = flags.DEFINE_string("out", "bench_results/vs_jasmine.json", "where to write the JSON")
_STAGES = flags.DEFINE_list("stages", ["tokenizer", "lam", "dynamics"], "stages to time")
_SHAPES = flags.DEFINE_list("shapes", ["small", "large"], "shapes to time (SHAPES)")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps per framework per round")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "alternating rounds (ours, Jasmine, ours, ...)")
_FRAMEWORKS = flags.DEFINE_list("frameworks", ["genie_jax", "jasmine"], "which sides to run")

# ---------------------------------------------------------------------------------------------
# Jasmine: its models from the checkout, one jitted step per stage.

def import_jasmine(path: str):
    """Jasmine's three model classes from a checkout; a clear error if it is not one."""
    root = os.path.abspath(os.path.expanduser(path or ""))
    marker = os.path.join(root, "jasmine", "models", "tokenizer.py")
    if not path or not os.path.isfile(marker):
        raise FileNotFoundError(f"--jasmine_dir={path!r} is not a Jasmine checkout: "
                                f"{marker} does not exist (git clone "
                                "https://github.com/p-doom/jasmine)")
    for p in (os.path.join(root, "jasmine"), root):
        if p not in sys.path:
            sys.path.insert(0, p)
    from jasmine.models.tokenizer import TokenizerVQVAE
    from models.dynamics import DynamicsMaskGIT
    from models.lam import LatentActionModel
    return TokenizerVQVAE, LatentActionModel, DynamicsMaskGIT


class JasmineStep:
    """One Jasmine train step of `stage` at `shape`, compiled once; each call runs one step."""

    def __init__(self, classes, stage: str, shape: str, seed: int = 0):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx
        Tokenizer, LAM, Dynamics = classes
        s = _shape(shape)
        f32 = jnp.float32
        common = dict(ffn_dim=MLP_RATIO * s["width"], num_blocks=s["depth"],
                      num_heads=s["heads"], dropout=0.0, param_dtype=f32, dtype=f32,
                      use_flash_attention=False)
        rngs = nnx.Rngs(seed)

        def tokenizer():
            return Tokenizer(in_dim=3, model_dim=s["width"], latent_dim=CODE_DIM,
                             num_latents=NUM_CODES, patch_size=s["patch"], codebook_dropout=0.01,
                             rngs=rngs, **common)

        def lam():
            return LAM(in_dim=3, model_dim=s["width"], latent_dim=CODE_DIM,
                       num_latents=NUM_ACTIONS, patch_size=s["lam_patch"],
                       codebook_dropout=0.0, rngs=rngs, **common)

        batch = s["lam_batch"] if stage == "lam" else s["batch"]
        self.frames = batch * s["frames"]
        videos = [jax.random.randint(jax.random.PRNGKey(seed + i),
                                     (batch, s["frames"], s["resolution"], s["resolution"], 3),
                                     0, 256, jnp.int32).astype(jnp.uint8) for i in range(2)]
        beta = 0.25  # Jasmine's vq_beta

        def vq_terms(out):
            q = jnp.square(jax.lax.stop_gradient(out["emb"]) - out["z"]).mean()
            c = jnp.square(out["emb"] - jax.lax.stop_gradient(out["z"])).mean()
            return q + beta * c

        if stage == "tokenizer":
            trained, frozen = tokenizer(), None

            def loss_fn(model, frozen, videos_BTHWC, rng):
                gt = videos_BTHWC.astype(f32) / 255.0
                out = model(dict(videos=gt), training=True)
                return jnp.square(gt - out["recon"].astype(f32)).mean() + vq_terms(out)
        elif stage == "lam":
            trained, frozen = lam(), None

            def loss_fn(model, frozen, videos_BTHWC, rng):
                gt = videos_BTHWC.astype(f32) / 255.0
                out = model(dict(videos=gt), training=True)
                return jnp.square(gt[:, 1:] - out["recon"].astype(f32)).mean() + vq_terms(out)
        elif stage == "dynamics":
            frozen_def, frozen = nnx.split((tokenizer(), lam()))
            trained = Dynamics(model_dim=s["width"], ffn_dim=MLP_RATIO * s["width"],
                               num_latents=NUM_CODES, latent_action_dim=CODE_DIM,
                               num_blocks=s["dyn_depth"], num_heads=s["heads"], dropout=0.0,
                               mask_limit=0.5, param_dtype=f32, dtype=f32,
                               use_flash_attention=False, rngs=rngs)

            def loss_fn(model, frozen, videos_BTHWC, rng):
                tok, lam_model = nnx.merge(frozen_def, frozen)
                gt = videos_BTHWC.astype(f32) / 255.0
                tokens_BTN = tok.vq_encode(gt, training=False)["indices"]
                actions = jax.lax.stop_gradient(lam_model.vq_encode(gt, training=False)["z_q"])
                logits_BTNV, mask_BTN = model(dict(video_tokens=jax.lax.stop_gradient(tokens_BTN),
                                                   latent_actions=actions, mask_rng=rng))
                ce_BTN = optax.softmax_cross_entropy_with_integer_labels(logits_BTNV, tokens_BTN)
                return (ce_BTN * mask_BTN).sum() / jnp.maximum(mask_BTN.sum(), 1)
        else:
            raise ValueError(f"unknown stage {stage!r} (tokenizer, lam, dynamics)")

        optimizer = nnx.Optimizer(trained, optax.adamw(3e-4, b1=0.9, b2=0.9, weight_decay=1e-4),
                                  wrt=nnx.Param)
        graphdef, state = nnx.split((trained, optimizer))

        def step(state, frozen, videos_BTHWC, rng):
            model, opt = nnx.merge(graphdef, state)
            model.train()
            loss, grads = nnx.value_and_grad(loss_fn)(model, frozen, videos_BTHWC, rng)
            opt.update(model, grads)
            return nnx.state((model, opt)), loss

        self.params = int(sum(x.size for x in jax.tree.leaves(nnx.state(trained, nnx.Param))))
        jitted = jax.jit(step, donate_argnums=0)
        self.rng = jax.random.PRNGKey(seed)
        self.videos = videos
        self.frozen = frozen
        t0 = time.perf_counter()
        self.compiled = jitted.lower(state, frozen, videos[0], self.rng).compile()
        self.compile_s = time.perf_counter() - t0
        self.flops = step_flops(self.compiled)
        self.state = state
        self.i = 0

    def __call__(self):
        """(seconds, loss) of one step, as EngineStep's calls."""
        import jax
        t = time.perf_counter()
        self.state, loss = self.compiled(self.state, self.frozen, self.videos[self.i % 2],
                                         jax.random.fold_in(self.rng, self.i))
        jax.block_until_ready(loss)
        self.i += 1
        return time.perf_counter() - t, loss


# ---------------------------------------------------------------------------------------------

def compare(stage: str, shape: str, frameworks, jasmine_classes, steps: int, rounds: int) -> dict:
    """Both sides built and compiled, one warm-up step each, then `rounds` alternating rounds."""
    sides = {}
    if "genie_jax" in frameworks:
        cfg = ours_config(stage, shape)
        sides["genie_jax"] = EngineStep(cfg)
        frames = cfg.data.batch_size * cfg.data.num_frames
    if "jasmine" in frameworks:
        sides["jasmine"] = JasmineStep(jasmine_classes, stage, shape)
        frames = sides["jasmine"].frames
    times = {name: [] for name in sides}
    for fn in sides.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in sides.items():
            times[name] += [fn()[0] for _ in range(steps)]
    row = {"stage": stage, "shape": shape, "frames_per_step": frames}
    for name, fn in sides.items():
        med = statistics.median(times[name])
        row[name] = {"params": fn.params, "compile_s": fn.compile_s, "step_s_median": med,
                     "step_s_all": times[name], "frames_per_s": frames / med,
                     "step_flops": fn.flops, "achieved_flops_per_s": fn.flops / med}
    if len(sides) == 2:
        row["jasmine_over_genie_jax"] = (row["jasmine"]["step_s_median"]
                                         / row["genie_jax"]["step_s_median"])
    return row


def main(_):
    from experiments.bench_lib import tune_malloc
    tune_malloc()  # the allocator genie-jax itself runs with
    import jax
    try:  # bad flags: one line naming the flag, before anything is built
        for name in _SHAPES.value:
            _shape(name)
        bad = set(_FRAMEWORKS.value) - {"genie_jax", "jasmine"}
        if bad:
            raise ValueError(f"--frameworks: unknown {sorted(bad)} (genie_jax, jasmine)")
        bad = set(_STAGES.value) - {"tokenizer", "lam", "dynamics"}
        if bad:
            raise ValueError(f"--stages: unknown {sorted(bad)} (tokenizer, lam, dynamics)")
        classes = import_jasmine(_JASMINE.value) if "jasmine" in _FRAMEWORKS.value else None
    except (ValueError, FileNotFoundError) as e:
        raise app.UsageError(str(e))
    peak = max(matmul_peak(n) for n in (1024, 2048))
    print(f"devices: {jax.devices()}  jax {jax.__version__}  dense f32 matmul peak "
          f"{peak / 1e9:.0f} GFLOP/s  XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    results = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
               "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "jasmine_dir": os.path.abspath(_JASMINE.value) if classes else "",
               "matmul_peak_flops_per_s": peak, "steps": _STEPS.value, "rounds": _ROUNDS.value,
               "rows": []}
    for shape in _SHAPES.value:
        for stage in _STAGES.value:
            row = compare(stage, shape, _FRAMEWORKS.value, classes, _STEPS.value, _ROUNDS.value)
            results["rows"].append(row)
            parts = [f"{n} {row[n]['step_s_median'] * 1e3:.1f} ms "
                     f"({row[n]['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s, "
                     f"{row[n]['params'] / 1e6:.2f}M params)"
                     for n in ("genie_jax", "jasmine") if n in row]
            ratio = (f"  -> {row['jasmine_over_genie_jax']:.2f}x"
                     if "jasmine_over_genie_jax" in row else "")
            print(f"[{stage} {shape}] " + "  ".join(parts) + ratio, flush=True)
    from genie_jax.media import write_text
    write_text(_OUT.value, json.dumps(results, indent=2))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
