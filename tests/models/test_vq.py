import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genie_jax.models.vq import VectorQuantizer, l2_normalize, restart_dead_codes


def _setup(V=8, L=4):
    vq = VectorQuantizer(num_codes=V, code_dim=L)
    z = jax.random.normal(jax.random.PRNGKey(0), (3, 5, L))
    keys = {"params": jax.random.PRNGKey(1), "vq": jax.random.PRNGKey(2)}
    variables = nn.unbox(jax.jit(vq.init)(keys, z))
    return vq, z, variables


def test_quantised_vectors_are_nearest_normalised_codes():
    vq, z, v = _setup()
    q, codes, aux = vq.apply(v, z)
    cb = np.asarray(l2_normalize(v["params"]["codebook"]))
    zn = np.asarray(l2_normalize(z)).reshape(-1, 4)
    dists = ((zn[:, None] - cb[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(np.asarray(codes).reshape(-1), dists.argmin(-1))
    np.testing.assert_allclose(np.asarray(q).reshape(-1, 4), cb[dists.argmin(-1)], atol=1e-5)
    assert float(aux["counts"].sum()) == 15


def test_straight_through_gradient_is_identity():
    vq, z, v = _setup()
    g = jax.grad(lambda zz: jnp.sum(vq.apply(v, zz)[0] * 3.0))(z)
    # d q / d z_normalised is identity, so the gradient is the normalisation's Jacobian times 3.
    g_ref = jax.grad(lambda zz: jnp.sum(l2_normalize(zz) * 3.0))(z)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)


def test_losses_and_perplexity_hand_computed():
    vq = VectorQuantizer(num_codes=2, code_dim=2, commitment=0.5)
    params = {"codebook": jnp.array([[1.0, 0.0], [0.0, 1.0]])}
    stats = {"age": jnp.zeros((2,), jnp.int32), "candidates": jnp.zeros((2, 2))}
    z = jnp.array([[1.0, 0.0], [0.6, 0.8]])  # already unit norm; nearest codes 0 and 1
    q, codes, aux = vq.apply({"params": params, "vq_stats": stats}, z)
    np.testing.assert_array_equal(codes, [0, 1])
    # squared error per element: ((0)^2+(0)^2 + 0.6^2 + 0.2^2) / 4 = 0.1
    np.testing.assert_allclose(aux["codebook_loss"], 0.1, rtol=1e-4)
    np.testing.assert_allclose(aux["vq_loss"], 0.1 + 0.5 * 0.1, rtol=1e-4)
    np.testing.assert_allclose(aux["perplexity"], 2.0, rtol=1e-5)  # uniform over 2 codes
    np.testing.assert_allclose(aux["batch_usage"], 1.0)


def test_dead_codes_restart_from_recent_encoder_outputs():
    vq, z, v = _setup(V=8)
    stats = v["vq_stats"]
    for i in range(3):  # train-mode calls age the unused codes
        (_, codes, _), upd = vq.apply(v, z, train=True, rngs={"vq": jax.random.PRNGKey(i)},
                                      mutable=["vq_stats"])
        v = {**v, "vq_stats": upd["vq_stats"]}
    age = np.asarray(v["vq_stats"]["vq"]["age"] if "vq" in v["vq_stats"] else v["vq_stats"]["age"])
    used = np.unique(np.asarray(codes))
    assert (age[used] == 0).all() and (age[np.setdiff1d(np.arange(8), used)] == 3).all()
    params, new_stats, n = restart_dead_codes({"vq": v["params"]}, {"vq": v["vq_stats"]}, 3)
    dead = np.setdiff1d(np.arange(8), used)
    assert int(n) == len(dead) > 0
    cand = np.asarray(v["vq_stats"]["candidates"])
    np.testing.assert_allclose(np.asarray(params["vq"]["codebook"])[dead], cand[dead])
    np.testing.assert_allclose(np.asarray(params["vq"]["codebook"])[used],
                               np.asarray(v["params"]["codebook"])[used])
    assert (np.asarray(new_stats["vq"]["age"]) == 0).all()
    # candidates are real (normalised) encoder outputs of the batch
    zn = np.asarray(l2_normalize(z)).reshape(-1, 4)
    for row in cand:
        assert np.min(np.abs(zn - row).sum(-1)) < 1e-5
    del stats


def test_error_sampling_draws_candidates_where_the_codebook_fits_worst():
    # 19 tokens sit exactly on code 0 (zero quantisation error), one sits between codes: every
    # candidate must be that one, where uniform sampling would mostly pick the coded ones.
    V, L = 4, 4
    codebook = np.eye(V, L, dtype=np.float32)
    odd = l2_normalize(jnp.asarray([1.0, 1.0, 0.3, 0.0]))
    z = jnp.concatenate([jnp.tile(jnp.asarray(codebook[:1]), (19, 1)), odd[None]])[None]
    picked = {}
    for mode in ("uniform", "error"):
        vq = VectorQuantizer(num_codes=V, code_dim=L, restart_sampling=mode)
        v = nn.unbox(vq.init({"params": jax.random.PRNGKey(1), "vq": jax.random.PRNGKey(2)}, z))
        v = {**v, "params": {"codebook": jnp.asarray(codebook)}}
        _, upd = vq.apply(v, z, train=True, rngs={"vq": jax.random.PRNGKey(3)},
                          mutable=["vq_stats"])
        cand = np.asarray(upd["vq_stats"]["candidates"])
        picked[mode] = np.isclose(cand, np.asarray(odd), atol=1e-5).all(-1)
    assert picked["error"].all()
    assert not picked["uniform"].all()


def test_unknown_restart_sampling_is_a_clear_error():
    vq = VectorQuantizer(num_codes=4, code_dim=4, restart_sampling="nearest")
    z = jnp.ones((1, 3, 4))
    v = nn.unbox(vq.init({"params": jax.random.PRNGKey(1), "vq": jax.random.PRNGKey(2)}, z))
    with pytest.raises(ValueError, match="restart_sampling.*'nearest'"):
        vq.apply(v, z, train=True, rngs={"vq": jax.random.PRNGKey(3)}, mutable=["vq_stats"])


@pytest.mark.parametrize("mode", ["uniform", "error"])
def test_restart_after_draws_only_on_restart_steps_and_restarts_the_same(mode):
    """With restart_after set, candidates are drawn only on steps where a code reaches that age
    (the steps restart_dead_codes restarts), and they equal the every-step draw's there; every
    other step keeps the old ones. So a run restarts the same codes to the same vectors."""
    V, L, after = 8, 4, 2
    z = jax.random.normal(jax.random.PRNGKey(0), (3, 5, L))
    every = VectorQuantizer(num_codes=V, code_dim=L, restart_sampling=mode)
    lazy = VectorQuantizer(num_codes=V, code_dim=L, restart_sampling=mode, restart_after=after)
    v0 = nn.unbox(every.init({"params": jax.random.PRNGKey(1), "vq": jax.random.PRNGKey(2)}, z))
    states = {"every": v0["vq_stats"], "lazy": v0["vq_stats"]}
    due_steps = 0
    for step in range(4):
        out = {}
        for name, vq in (("every", every), ("lazy", lazy)):
            f = jax.jit(lambda s, r, vq=vq: vq.apply({"params": v0["params"], "vq_stats": s}, z,
                                                     train=True, rngs={"vq": r},
                                                     mutable=["vq_stats"])[1]["vq_stats"])
            out[name] = f(states[name], jax.random.PRNGKey(10 + step))
        np.testing.assert_array_equal(out["lazy"]["age"], out["every"]["age"])
        due = bool((np.asarray(out["every"]["age"]) >= after).any())
        due_steps += due
        want = out["every"] if due else states["lazy"]
        np.testing.assert_array_equal(out["lazy"]["candidates"], want["candidates"])
        states = out
    assert 0 < due_steps < 4  # steps 0-1 are not due (ages 1, then 2 for the unused codes)
