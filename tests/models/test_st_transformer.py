import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from genie_jax.models.st_transformer import STTransformer
from tests.models.helpers import jitted_apply


def _init(model, x):
    return nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), x))


def test_output_at_t_ignores_later_frames():
    model = STTransformer(depth=2, num_heads=2)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 6, 16))
    params = _init(model, x)
    apply = jitted_apply(model)
    y = apply(params, x)
    for t in range(4):
        x2 = x.at[:, t + 1:].set(jax.random.normal(jax.random.PRNGKey(t + 7), x[:, t + 1:].shape))
        y2 = apply(params, x2)
        np.testing.assert_allclose(y2[:, : t + 1], y[:, : t + 1], atol=1e-5)
        assert not np.allclose(y2[:, t + 1:], y[:, t + 1:], atol=1e-3)


def test_spatial_attention_mixes_patches_within_a_frame():
    model = STTransformer(depth=1, num_heads=2)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 4, 8))
    params = _init(model, x)
    apply = jitted_apply(model)
    y = apply(params, x)
    x2 = x.at[:, :, 0].multiply(-2.0)  # change patch 0 only (not a shift LayerNorm removes)
    y2 = apply(params, x2)
    assert not np.allclose(y2[:, :, 1], y[:, :, 1], atol=1e-4)  # patch 1 sees it


def test_every_param_has_logical_names():
    model = STTransformer(depth=1, num_heads=2)
    boxed = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 2, 3, 8)))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
    for v in leaves:
        assert len(v.names) == v.value.ndim


def test_padded_full_attention_equals_unpadded_with_its_gradient():
    # cuDNN gets each frame padded to a multiple of 8 tokens (257 -> 264); the padded keys are
    # excluded by length and the padded rows dropped, so output and gradient are unchanged.
    from genie_jax.models.st_transformer import full_attention
    q, k, v = jax.random.normal(jax.random.PRNGKey(3), (3, 2, 11, 2, 8))

    def loss(fn, q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v)))

    plain = lambda q, k, v: full_attention(q, k, v, None)
    padded = lambda q, k, v: full_attention(q, k, v, None, pad_multiple=8)
    np.testing.assert_allclose(jax.jit(padded)(q, k, v), jax.jit(plain)(q, k, v), atol=1e-5)
    g_plain = jax.jit(jax.grad(lambda *a: loss(plain, *a), argnums=(0, 1, 2)))(q, k, v)
    g_pad = jax.jit(jax.grad(lambda *a: loss(padded, *a), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_pad, g_plain):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_heads_major_attention_equals_jax_attention_with_gradients():
    from genie_jax.models.st_transformer import heads_major_attention
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (3, 9, 2, 8)) for i in range(3))
    np.testing.assert_allclose(heads_major_attention(q, k, v),
                               jax.nn.dot_product_attention(q, k, v), atol=1e-5)
    w = jax.random.normal(jax.random.PRNGKey(5), (3, 9, 2, 8))

    def loss(f):
        return lambda q, k, v: jnp.sum(w * f(q, k, v))
    ours = jax.grad(loss(heads_major_attention), argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_heads_major_option_runs_the_whole_transformer_like_the_default():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5, 16))
    ref = STTransformer(depth=1, num_heads=2)
    params = _init(ref, x)
    ours = STTransformer(depth=1, num_heads=2, attention_impl="heads_major")
    np.testing.assert_allclose(jitted_apply(ours)(params, x), jitted_apply(ref)(params, x),
                               atol=1e-5)
