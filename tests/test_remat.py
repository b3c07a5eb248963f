"""model.remat policies (none, full, save_dots): the same loss and gradients, different compiled
memory and FLOPs; older configs and run folders with a bool remat still build and load."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genie_jax.errors import UserError
from genie_jax.models.st_transformer import REMAT_POLICIES, remat_policy, stack_blocks
from genie_jax.runs import Run, check_compatible, stage_meta
from genie_jax.stages import get_stage
from tests.stages.helpers import frames_batch, test_config as stage_config


def test_policy_names_and_the_bools_of_older_configs():
    assert REMAT_POLICIES == ("none", "full", "save_dots")
    assert [remat_policy(v) for v in (True, False, np.bool_(True), "true", "False", "none",
                                      "full", "save_dots")] == \
        ["full", "none", "full", "full", "none", "none", "full", "save_dots"]
    for bad in ("dots", "", 1, None):
        with pytest.raises(ValueError, match="model.remat=.* is not one of none, full, save_dots"):
            remat_policy(bad)


def test_a_bool_remat_in_an_old_run_folder_still_builds_and_its_checkpoint_still_loads(tmp_path):
    old = stage_config("tokenizer").to_dict()
    old["model"]["remat"] = True                        # as config.json was written before
    old["model"].pop("scan_layers")                     # ... and before scan_layers
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = Run(str(tmp_path)).config(stage="tokenizer")
    assert get_stage(cfg).model.remat == "full"
    # remat fixes no parameter shape: a checkpoint never refuses a config over it
    saved = stage_meta("tokenizer", {"model": cfg.model})
    for policy in REMAT_POLICIES:
        now = stage_config("tokenizer")
        now.model.remat = policy
        check_compatible(saved, stage_meta("tokenizer", {"model": now.model}), "RUN")
    bad = stage_config("tokenizer")
    bad.model.remat = "most"
    with pytest.raises(UserError, match="model.remat='most' is not one of"):
        get_stage(bad)


def _random_like(init, *args, seed=0):
    rng = np.random.default_rng(seed)
    abstract = nn.unbox(jax.eval_shape(init, *args))
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.2, a.shape).astype(a.dtype))
                        if jnp.issubdtype(a.dtype, jnp.floating) else jnp.zeros(a.shape, a.dtype),
                        dict(abstract))


def _compiled_steps():
    """{(scan_layers, policy): (compiled loss+grad step of the test tokenizer, its args)} over
    the same weights (stacked for the scanned stack)."""
    out = {}
    frames = jnp.asarray(frames_batch(8, 4, 16, seed=1))
    weights = None
    for scan in (False, True):
        for policy in REMAT_POLICIES:
            cfg = stage_config("tokenizer")
            cfg.model.update(depth=2, decoder_depth=2, remat=policy, scan_layers=scan)
            stage = get_stage(cfg)
            if weights is None:
                weights = _random_like(stage.init, jax.random.PRNGKey(0), {"frames": frames})
            params = stack_blocks(weights["params"]) if scan else weights["params"]
            state = {k: v for k, v in weights.items() if k != "params"}
            step = jax.value_and_grad(stage.loss, has_aux=True)
            args = (params, {}, state, {"frames": frames}, jax.random.PRNGKey(1))
            out[scan, policy] = jax.jit(step).lower(*args).compile(), args
    return out


def test_every_policy_gives_the_same_loss_and_gradients_and_its_own_memory_and_flops():
    steps = _compiled_steps()
    (ref_loss, _), ref_grads = steps[False, "none"][0](*steps[False, "none"][1])
    for (scan, policy), (compiled, args) in steps.items():
        (loss, _), grads = compiled(*args)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, err_msg=f"{scan} {policy}")
        ref = stack_blocks(ref_grads) if scan else ref_grads
        assert jax.tree.structure(grads) == jax.tree.structure(ref)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6, err_msg=f"{scan} {policy}")
    temp = {k: c.memory_analysis().temp_size_in_bytes for k, (c, _) in steps.items()}
    flops = {k: c.cost_analysis()["flops"] for k, (c, _) in steps.items()}
    print("temp bytes", temp, "flops", flops)
    # Inside a scan the backward loop can only keep what the policy saved: full keeps each
    # block's input, save_dots also the projection/MLP matmul outputs, none everything.
    assert temp[True, "full"] < temp[True, "save_dots"] < temp[True, "none"]
    # Unrolled, the recomputation is there (more FLOPs: save_dots recomputes the cheap ops,
    # full the whole forward pass of every block) ...
    assert flops[False, "none"] < flops[False, "save_dots"] < flops[False, "full"]
    # (whether that becomes less memory is the scheduler's business: XLA's CPU default does not
    # schedule for memory; experiments/RESULTS.md, remat policies.)
