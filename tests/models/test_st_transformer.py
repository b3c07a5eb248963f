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
