"""The sampler's temporal KV cache: a one-frame pass against a context pass's cache gives the
same logits as a full pass over the buffer, for every slot and both action modes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genie_jax.models.dynamics import Dynamics

V, A, M, N = 16, 6, 5, 4


def _model(mode, depth=2, temporal_pos="learned"):
    return Dynamics(num_codes=V, num_actions=A, image_size=(8, 8), patch_size=4, width=16,
                    depth=depth, num_heads=2, max_frames=6, action_mode=mode,
                    temporal_pos=temporal_pos)


def _fill_pass(model):
    """The context pass that fills the KV cache, compiled whole (eagerly every op is its own XLA
    compile); -> fn(variables, tokens, actions) -> (logits, {"kv_cache": ...})."""
    return jax.jit(functools.partial(model.apply, fill_kv_cache=True, mutable=["kv_cache"]))


@pytest.mark.parametrize("mode,temporal_pos", [("token", "learned"), ("add", "learned"),
                                               ("token", "rope")])
@pytest.mark.parametrize("t", [0, 2, M - 1])
def test_one_frame_pass_matches_full_pass(mode, temporal_pos, t):
    model = _model(mode, temporal_pos=temporal_pos)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(t), 3)
    tokens = jax.random.randint(k1, (2, M, N), 0, V + 1)   # includes mask ids
    actions = jax.random.randint(k2, (2, M - 1), -1, A)    # includes "unknown"
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens, actions))["params"]
    full = jax.jit(model.apply)({"params": params}, tokens, actions)
    # Cache from a buffer whose frame t (and later) differ: only frames < t may matter.
    other = tokens.at[:, t:].set(jax.random.randint(k3, (2, M - t, N), 0, V + 1))
    fill = _fill_pass(model)
    _, cache = fill({"params": params}, other, actions)
    one = jax.jit(lambda c, f, s: model.apply({"params": params, **c}, f[:, None], actions,
                                              kv_slot=s))(cache, tokens[:, t], jnp.int32(t))
    assert one.shape == (2, 1, N, V)
    np.testing.assert_allclose(one[:, 0], full[:, t], atol=2e-5, rtol=1e-5)


def test_one_frame_pass_without_a_cache_is_a_clear_error():
    model = _model("token", depth=1)
    tokens = jnp.zeros((1, M, N), jnp.int32)
    actions = jnp.zeros((1, M - 1), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens, actions))["params"]
    with pytest.raises(ValueError, match="kv_cache"):
        model.apply({"params": params}, tokens[:, :1], actions, kv_slot=1)


def test_training_passes_store_no_cache():
    model = _model("token", depth=1)
    tokens = jnp.zeros((1, M, N), jnp.int32)
    actions = jnp.zeros((1, M - 1), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens, actions))["params"]
    _, state = model.apply({"params": params}, tokens, actions, mutable=True)
    assert "kv_cache" not in state


def test_rope_cache_survives_a_slide():
    # Relative temporal positions: roll the cache of frames f0..f4 by one slot and run frame f5
    # at the last slot; that equals a full pass over the whole video f0..f5 in which each frame
    # attends to its M latest frames (the rolling cache's meaning: dropped frames still shaped
    # the cached frames' deeper keys/values, and each frame keeps its own action).
    model = _model("token", temporal_pos="rope")
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    frames = jax.random.randint(k1, (2, M + 1, N), 0, V)
    actions = jax.random.randint(k2, (2, M), 0, A)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), frames[:, :M],
                                 actions[:, :M - 1]))["params"]
    # Each pass compiled whole (eagerly every op is its own XLA compile).
    fill = _fill_pass(model)
    banded_pass = jax.jit(functools.partial(model.apply, temporal_window=M))
    _, cache = fill({"params": params}, frames[:, :M], actions[:, :M - 1])
    rolled = jax.tree.map(lambda a: jnp.roll(a, -1, axis=1), cache)
    one = jax.jit(model.apply)({"params": params, **rolled}, frames[:, M:], actions[:, 1:],
                               kv_slot=jnp.int32(M - 1))
    banded = banded_pass({"params": params}, frames, actions)
    np.testing.assert_allclose(one[:, 0], banded[:, M], atol=2e-5, rtol=1e-5)
    # Before any slide the band changes nothing: a plain causal pass.
    np.testing.assert_allclose(banded[:, :M], jax.jit(model.apply)(
        {"params": params}, frames[:, :M], actions[:, :M - 1]), atol=2e-5)


def test_one_frame_pass_commits_its_keys_when_the_cache_is_mutable():
    model = _model("token", temporal_pos="rope")
    tokens = jax.random.randint(jax.random.PRNGKey(1), (1, M, N), 0, V)
    actions = jnp.zeros((1, M - 1), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens, actions))["params"]
    fill = _fill_pass(model)
    _, full = fill({"params": params}, tokens, actions)
    _, part = fill({"params": params}, tokens.at[:, 2:].set(V), actions)
    _, committed = jax.jit(functools.partial(model.apply, mutable=["kv_cache"]))(
        {"params": params, **part}, tokens[:, 2:3], actions, kv_slot=jnp.int32(2))
    for a, b in zip(jax.tree.leaves(committed), jax.tree.leaves(full)):
        np.testing.assert_allclose(a[:, :3], b[:, :3], atol=2e-5, rtol=1e-5)
