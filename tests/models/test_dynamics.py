import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genie_jax.models.dynamics import Dynamics, shift_actions
from tests.models.helpers import jitted_apply

V, A, T, N = 16, 6, 5, 4


def _model(mode="token"):
    return Dynamics(num_codes=V, num_actions=A, image_size=(8, 8), patch_size=4, width=16,
                    depth=1, num_heads=2, max_frames=6, action_mode=mode)


def _inputs(seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return (jax.random.randint(k1, (2, T, N), 0, V), jax.random.randint(k2, (2, T - 1), 0, A))


def _setup(mode):
    model = _model(mode)
    tokens, actions = _inputs()
    v = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens, actions))
    return model, v, tokens, actions


def _diff(a, b):
    return float(jnp.max(jnp.abs(a - b)))


def test_shift_actions_aligns_transition_t_with_frame_t_plus_1():
    a = jnp.array([[3, 1, -1]])
    np.testing.assert_array_equal(shift_actions(a, 6), [[6, 3, 1, 6]])


@pytest.mark.parametrize("mode", ["token", "add"])
def test_logits_shape_and_time_causality(mode):
    model, v, tokens, actions = _setup(mode)
    apply = jitted_apply(model)
    logits = apply(v, tokens, actions)
    assert logits.shape == (2, T, N, V)
    # Tokens of frames > 2 do not change logits of frames <= 2.
    tokens2 = tokens.at[:, 3:].set((tokens[:, 3:] + 1) % V)
    logits2 = apply(v, tokens2, actions)
    np.testing.assert_allclose(logits2[:, :3], logits[:, :3], atol=1e-5)
    assert _diff(logits2[:, 3], logits[:, 3]) > 1e-4
    # A mask token at frame 3 changes frame 3's logits, not earlier ones.
    logits3 = apply(v, tokens.at[:, 3].set(model.mask_id), actions)
    np.testing.assert_allclose(logits3[:, :3], logits[:, :3], atol=1e-5)
    assert _diff(logits3[:, 3], logits[:, 3]) > 1e-4


@pytest.mark.parametrize("mode", ["token", "add"])
def test_action_t_conditions_frame_t_plus_1_and_nothing_earlier(mode):
    model, v, tokens, actions = _setup(mode)
    apply = jitted_apply(model)
    logits = apply(v, tokens, actions)
    t = 2  # transition 2 -> 3
    new = actions.at[:, t].set((actions[:, t] + 1) % A)
    logits2 = apply(v, tokens, new)
    np.testing.assert_allclose(logits2[:, :t + 1], logits[:, :t + 1], atol=1e-5)  # frames <= t
    assert _diff(logits2[:, t + 1], logits[:, t + 1]) > 1e-4                      # frame t+1


@pytest.mark.parametrize("mode", ["token", "add"])
def test_off_by_one_next_action_does_not_reach_frame_t_plus_1(mode):
    model, v, tokens, actions = _setup(mode)
    apply = jitted_apply(model)
    logits = apply(v, tokens, actions)
    t = 1
    # a_{t+1} (transition 2 -> 3) must not affect frame t+1 = 2 (nor earlier frames).
    new = actions.at[:, t + 1].set((actions[:, t + 1] + 1) % A)
    logits2 = apply(v, tokens, new)
    np.testing.assert_allclose(logits2[:, :t + 2], logits[:, :t + 2], atol=1e-5)
    assert _diff(logits2[:, t + 2], logits[:, t + 2]) > 1e-4


def test_bad_shapes_are_named():
    model, v, tokens, actions = _setup("token")
    with pytest.raises(ValueError, match="one per transition"):
        model.apply(v, tokens, jnp.zeros((2, T), jnp.int32))
    with pytest.raises(ValueError, match="tokens per frame"):
        model.apply(v, tokens[:, :, :3], actions)
    with pytest.raises(ValueError, match="action_mode"):
        Dynamics(num_codes=V, image_size=(8, 8), action_mode="concat").init(
            jax.random.PRNGKey(0), tokens, actions)


def test_copy_gate_raises_only_the_previous_frames_token():
    # The gate adds to one logit per patch: the token that patch held one frame earlier. Frame 0
    # and patches whose previous token is masked get nothing; at init the gate is log(V).
    plain = _model("add")
    gated = plain.clone(copy_gate=True)
    tokens, actions = _inputs()
    tokens = tokens.at[0, 2, 1].set(gated.mask_id)  # frame 3, patch 1 of sample 0: no prior
    v = nn.unbox(jax.jit(gated.init)(jax.random.PRNGKey(0), tokens, actions))
    assert float(v["params"]["copy_gate_b"]) == pytest.approx(np.log(V))
    base = {"params": {k: x for k, x in v["params"].items() if not k.startswith("copy_gate")}}
    delta = np.asarray(gated.apply(v, tokens, actions) - plain.apply(base, tokens, actions))
    np.testing.assert_allclose(delta[:, 0], 0.0)
    expect = np.zeros_like(delta)
    for b in range(2):
        for t in range(1, T):
            for n in range(N):
                if int(tokens[b, t - 1, n]) < V:
                    expect[b, t, n, int(tokens[b, t - 1, n])] = np.log(V)
    np.testing.assert_allclose(delta, expect, atol=1e-4)
