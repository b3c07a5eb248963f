"""Fake finished runs (tokenizer, LAM) for stages and the sampler: params from init, saved the way
the trainer saves them (orbax Composite with the full train state and meta)."""
import json
import os
import sys

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from tests.conftest import REPO


def test_config(name: str, arg: str = "size=test"):
    sys.path.insert(0, REPO)
    import importlib
    return importlib.import_module(f"experiments.configs.{name}").get_config(arg)


# Paths name where things are, not what the model is: two configs that differ only in them init
# the same params.
_PATH_KEYS = ("workdir", "dir", "token_cache")


def _without_paths(d):
    return {k: _without_paths(v) if isinstance(v, dict) else v
            for k, v in d.items() if k not in _PATH_KEYS}


_INITS = {}  # (stage, config without paths, batch spec, step) -> (params, model_state, opt_state)


def _init_state(stage, stage_config, step):
    """The stage's initial variables and optimizer state for PRNGKey(step), made once per model
    in a test process: the same values each time, and each init is a trace plus a compile."""
    spec = stage.batch_spec(1)
    key = (stage.name, json.dumps(_without_paths(stage_config.to_dict()), sort_keys=True,
                                  default=str),
           tuple((k, s.shape, str(s.dtype)) for k, s in sorted(spec.items())), step)
    if key not in _INITS:
        batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}
        # Compiled whole: an eager Flax init compiles every op on its own (hundreds of tiny XLA
        # compiles, once most of the suite's compile time); the values are the same.
        v = dict(nn.unbox(jax.jit(stage.init)(jax.random.PRNGKey(step), batch)))
        params = v.pop("params")
        _INITS[key] = (params, v, jax.jit(optax.adamw(1e-3).init)(params))
    # Fresh containers over the same (immutable) arrays: a caller may edit its dicts.
    return jax.tree.map(lambda a: a, _INITS[key])


def save_fake_run(workdir: str, stage_config, step: int = 5) -> dict:
    """Init the stage's model, save a checkpoint + config.json like a trainer run; -> params."""
    from genie_jax.stages import get_stage
    from genie_jax.runs import Checkpointer, stage_meta
    stage = get_stage(stage_config)
    params, model_state, opt_state = _init_state(stage, stage_config, step)
    state = {"step": jnp.asarray(step, jnp.int32), "params": params, "model_state": model_state,
             "opt_state": opt_state, "rng": jax.random.PRNGKey(0),
             "first_bad_step": jnp.asarray(-1, jnp.int32)}
    os.makedirs(workdir, exist_ok=True)
    ck = Checkpointer(workdir, keep=2, async_save=False)
    sections = {s: stage_config[s] for s in stage.shape_sections}
    ck.save(step, state, None, stage_meta(stage.name, sections))
    ck.close()
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(stage_config.to_json_best_effort(indent=2))
    return params


def frames_batch(B: int, T: int, H: int, seed: int = 0):
    """A small moving-square video: learnable structure, uint8 [B,T,H,H,3]."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = np.zeros((B, T, H, H, 3), np.uint8)
    for b in range(B):
        x, y = rng.integers(0, H - 4, 2)
        dx = rng.choice([-1, 1])
        for t in range(T):
            xx = int(np.clip(x + dx * 2 * t, 0, H - 4))
            out[b, t, y:y + 4, xx:xx + 4] = (255, 200, 50)
    return out


def save_fake_pipeline(root) -> str:
    """Tokenizer, LAM and dynamics runs (random params) under `root`; -> the dynamics workdir."""
    tok, lam = save_fake_tok_lam(root)
    dyn = str(root / "dyn")
    save_fake_run(dyn, test_config("dynamics", f"size=test,tokenizer={tok},lam={lam}"))
    return dyn


def save_fake_tok_lam(root) -> tuple[str, str]:
    """Fake finished test-size tokenizer and LAM runs under `root` -> (tok, lam) folders."""
    tok, lam = os.path.join(str(root), "tok"), os.path.join(str(root), "lam")
    save_fake_run(tok, test_config("tokenizer"))
    save_fake_run(lam, test_config("lam"))
    return tok, lam


def save_fake_dynamics_on_data(dyn: str, fake_dyn: str, data_dir: str) -> str:
    """A fake dynamics run at `dyn` over the tokenizer and LAM beside `fake_dyn` (made by
    save_fake_pipeline), reading the ArrayRecord dataset `data_dir`; -> dyn."""
    root = os.path.dirname(fake_dyn)
    cfg = test_config("dynamics", f"size=test,tokenizer={root}/tok,lam={root}/lam")
    cfg.data.source, cfg.data.dir = "arrayrecord", data_dir
    save_fake_run(dyn, cfg)
    return dyn
