"""Table lookups as a gather (CPU) or a one-hot matmul (GPU/TPU): the same values and gradients,
in the layers and in the models that use them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genie_jax.models import layers
from genie_jax.models.vq import VectorQuantizer


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_lookup_and_counts_agree_between_gather_and_one_hot(dtype):
    table = jax.random.normal(jax.random.PRNGKey(0), (9, 5), jnp.float32).astype(dtype)
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 4, 7), 0, 9)
    w = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 7, 5))
    out, grads = {}, {}
    for oh in (False, True):
        f = lambda t, oh=oh: jnp.sum(layers.lookup(t, ids, one_hot=oh).astype(jnp.float32) * w)  # noqa: E731
        out[oh] = layers.lookup(table, ids, one_hot=oh)
        grads[oh] = jax.grad(f)(table)
        assert out[oh].dtype == dtype and out[oh].shape == (3, 4, 7, 5)
    np.testing.assert_array_equal(np.asarray(out[True], np.float32), np.asarray(out[False], np.float32))
    g0, g1 = (np.asarray(grads[k], np.float32) for k in (False, True))
    tol = (3e-2 if dtype == jnp.bfloat16 else 1e-5) * np.abs(g0).max()  # summation order only
    np.testing.assert_allclose(g1, g0, atol=tol)
    counts = [layers.count_ids(ids, 9, one_hot=oh) for oh in (False, True)]
    np.testing.assert_array_equal(counts[0], counts[1])
    assert float(counts[0].sum()) == ids.size
    np.testing.assert_array_equal(counts[0], np.bincount(np.asarray(ids).ravel(), minlength=9))


def test_vector_quantizer_is_the_same_with_one_hot_lookups(monkeypatch):
    vq = VectorQuantizer(num_codes=16, code_dim=4)
    z = jax.random.normal(jax.random.PRNGKey(3), (2, 6, 4))
    variables = jax.jit(vq.init)(jax.random.PRNGKey(4), z)
    params, stats = variables["params"], variables["vq_stats"]

    def run():
        def loss(p, z):
            q, codes, aux = vq.apply({"params": p, "vq_stats": stats}, z)
            return jnp.sum(q ** 2) + aux["vq_loss"], (codes, aux["counts"])
        # Traced afresh per call: the patched one_hot_lookups is read while tracing.
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, z)

    monkeypatch.setattr(layers, "one_hot_lookups", lambda: False)
    (l0, (c0, n0)), g0 = run()
    monkeypatch.setattr(layers, "one_hot_lookups", lambda: True)
    (l1, (c1, n1)), g1 = run()
    np.testing.assert_array_equal(c0, c1)
    np.testing.assert_array_equal(n0, n1)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())
