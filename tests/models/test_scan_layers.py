"""model.scan_layers: the blocks as one nn.scan over stacked params compute what the unrolled
stack computes on the same weights (tokenizer, LAM, dynamics); the sampler runs a scanned run's
weights unrolled; a scanned checkpoint is refused by an unscanned config, in one line.
(Gradients through the scan: tests/test_remat.py, a train step under every remat policy.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genie_jax.errors import UserError
from genie_jax.models.st_transformer import STTransformer, stack_blocks, unstack_blocks
from genie_jax.runs import check_compatible, stage_meta
from genie_jax.sampling import WorldModel
from genie_jax.stages import get_stage
from tests.stages.helpers import frames_batch, save_fake_run, test_config as stage_config


def _config(name, scan, arg="size=test"):
    cfg = stage_config(name, arg)
    with cfg.unlocked():
        cfg.model.depth = 2
        if "decoder_depth" in cfg.model:
            cfg.model.decoder_depth = 3
        cfg.model.scan_layers = scan
    return cfg


def _random_like(init, *args, seed=0):
    """Random weights in the shapes `init(*args)` makes (N(0, 0.2); drawn by numpy: compiling
    a real init costs seconds, and any weights serve to compare two layouts)."""
    rng = np.random.default_rng(seed)
    abstract = nn.unbox(jax.eval_shape(init, *args))
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.2, a.shape).astype(a.dtype))
                        if jnp.issubdtype(a.dtype, jnp.floating) else jnp.zeros(a.shape, a.dtype),
                        dict(abstract))


def _unrolled_and_stacked(name, arg="size=test"):
    """(unrolled stage, scanned stage, unrolled variables, the same weights stacked)."""
    plain, scanned = get_stage(_config(name, False, arg)), get_stage(_config(name, True, arg))
    spec = plain.batch_spec(2)
    batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}
    v = _random_like(plain.init, jax.random.PRNGKey(0), batch)
    stacked = {**v, "params": stack_blocks(v["params"])}
    abstract = jax.eval_shape(lambda: nn.unbox(scanned.init(jax.random.PRNGKey(0), batch)))
    assert jax.tree.structure(stacked) == jax.tree.structure(dict(abstract))
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(dict(abstract))):
        assert a.shape == b.shape and a.dtype == b.dtype
    return plain, scanned, v, stacked


def test_stacking_round_trips_and_stacked_params_carry_a_layers_axis():
    x = jnp.zeros((1, 2, 3, 8))
    boxed = jax.eval_shape(STTransformer(depth=3, num_heads=2, scan_layers=True).init,
                           jax.random.PRNGKey(0), x)
    kernel = boxed["params"]["blocks"]["mlp"]["fc1"]["kernel"]
    assert kernel.names == ("layers", "embed", "mlp") and kernel.value.shape == (3, 8, 32)
    params = _random_like(STTransformer(depth=3, num_heads=2).init, jax.random.PRNGKey(0), x)
    back = unstack_blocks(stack_blocks(params))
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["tokenizer", "lam"])
def test_scanned_video_vq_models_equal_the_unrolled_ones(name):
    plain, scanned, v, stacked = _unrolled_and_stacked(name)
    frames = jnp.asarray(frames_batch(2, 4, 16, seed=1))
    state = {k: x for k, x in v.items() if k != "params"}
    a = jax.jit(plain.eval_step)(v["params"], {}, state, {"frames": frames})
    b = jax.jit(scanned.eval_step)(stacked["params"], {}, state, {"frames": frames})
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_scanned_dynamics_equals_the_unrolled_one():
    plain, scanned, v, stacked = _unrolled_and_stacked("dynamics", "size=test,tokenizer=x,lam=y")
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    N = plain.model.tokens_per_frame
    tokens = jax.random.randint(k1, (2, 4, N), 0, plain.model.num_codes + 1)
    actions = jax.random.randint(k2, (2, 3), 0, plain.model.num_actions)
    logits = lambda stage, p: jax.jit(stage.model.apply)({"params": p}, tokens, actions)  # noqa
    np.testing.assert_allclose(logits(plain, v["params"]["dynamics"]),
                               logits(scanned, stacked["params"]["dynamics"]),
                               rtol=1e-5, atol=1e-5)


def test_the_sampler_runs_a_scanned_run_unrolled_and_samples_the_same_frames():
    # Greedy decoding: the scanned run's weights, split per block by WorldModel, pick exactly
    # the tokens the unrolled run's weights pick.
    arg = "size=test,tokenizer=x,lam=y"
    _, _, v, stacked = _unrolled_and_stacked("dynamics", arg)
    tok, lam = get_stage(stage_config("tokenizer")), get_stage(stage_config("lam"))
    frames = {"frames": jnp.zeros((1, 2, 16, 16, 3), jnp.uint8)}
    others = {"tokenizer": _random_like(tok.init, jax.random.PRNGKey(1), frames)["params"],
              "lam": _random_like(lam.init, jax.random.PRNGKey(2), frames)["params"]}
    plain = WorldModel(_config("dynamics", False, arg), {**others, **v["params"]},
                       temperature=0.0, steps=2)
    scanned = WorldModel(_config("dynamics", True, arg), {**others, **stacked["params"]},
                         temperature=0.0, steps=2)
    assert "blocks" not in scanned.params["dynamics"]["transformer"]
    prompt = jnp.asarray(frames_batch(2, 2, 16, seed=2))
    s_p, s_s = plain.reset(prompt, seed=1), scanned.reset(prompt, seed=1)
    for a in ([1, 2], [3, 4], [5, 0]):  # the third step slides the 4-frame buffer
        f_p, s_p = plain.step(s_p, jnp.array(a))
        f_s, s_s = scanned.step(s_s, jnp.array(a))
        np.testing.assert_array_equal(s_p["tokens"], s_s["tokens"])
        np.testing.assert_allclose(f_p, f_s, atol=1e-6)


def test_kv_cache_passes_of_a_scanned_stack_are_a_clear_error():
    model = STTransformer(depth=2, num_heads=2, scan_layers=True)
    x = jnp.zeros((1, 2, 3, 8))
    params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
    with pytest.raises(ValueError, match="unrolled stack"):
        model.apply(params, x, fill_kv_cache=True, mutable=["kv_cache"])


def test_a_scanned_checkpoint_is_refused_by_an_unscanned_config_and_old_runs_still_load():
    scanned = stage_meta("tokenizer", {"model": _config("tokenizer", True).model})
    plain = stage_meta("tokenizer", {"model": _config("tokenizer", False).model})
    with pytest.raises(UserError, match=r"model.scan_layers: checkpoint has True, config has "
                                        r"False.*stores the blocks' parameters stacked"):
        check_compatible(scanned, plain, "RUN/checkpoints/5")
    before = {k: v for k, v in plain.items() if k != "model.scan_layers"}  # a run from before
    check_compatible(before, plain, "RUN/checkpoints/5")
    with pytest.raises(UserError, match="model.scan_layers: checkpoint has False"):
        check_compatible(before, scanned, "RUN/checkpoints/5")


@pytest.mark.slow  # ~25 s (three eager inits and orbax saves); the conversion itself is above
def test_a_scanned_dynamics_run_on_disk_loads_into_the_sampler(tmp_path):
    tok, lam, dyn = (str(tmp_path / n) for n in ("tok", "lam", "dyn"))
    save_fake_run(tok, stage_config("tokenizer"))
    save_fake_run(lam, stage_config("lam"))
    saved = save_fake_run(dyn, _config("dynamics", True, f"size=test,tokenizer={tok},lam={lam}"))
    assert "blocks" in saved["dynamics"]["transformer"]
    wm = WorldModel.load(dyn, steps=1)
    for a, b in zip(jax.tree.leaves(unstack_blocks(saved["dynamics"])),
                    jax.tree.leaves(wm.params["dynamics"])):
        np.testing.assert_array_equal(a, b)
    frame, state = wm.step(wm.reset(jnp.asarray(frames_batch(1, 2, 16)), seed=0), 1)
    assert frame.shape == (1, 16, 16, 3) and int(state["length"]) == 3
