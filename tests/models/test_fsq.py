import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genie_jax.models.fsq import FiniteScalarQuantizer, check_levels
from genie_jax.models.lam import LatentActionModel
from genie_jax.models.tokenizer import Tokenizer

LEVELS = (8, 5, 3)


@pytest.mark.parametrize("levels", [LEVELS, (2, 3, 4)])
def test_every_code_is_reachable_and_lookup_inverts_the_quantiser(levels):
    fsq = FiniteScalarQuantizer(levels)
    # A dense grid of pre-activations covers every level of every channel.
    axis = np.linspace(-4, 4, 81, dtype=np.float32)
    z = jnp.asarray(list(itertools.product(axis, axis, axis)))
    q, codes, aux = fsq.apply({}, z)
    assert int(codes.min()) == 0 and int(codes.max()) == np.prod(levels) - 1
    assert len(np.unique(np.asarray(codes))) == np.prod(levels)
    np.testing.assert_allclose(fsq.apply({}, codes, method=FiniteScalarQuantizer.lookup),
                               q, atol=1e-6)
    assert float(jnp.abs(q).max()) <= 1.0
    # channel i takes exactly levels[i] distinct values
    for i, n in enumerate(levels):
        assert len(np.unique(np.asarray(q[:, i]).round(5))) == n
    assert float(aux["vq_loss"]) == 0.0 and aux["counts"].shape == (np.prod(levels),)


def test_straight_through_gradient():
    fsq = FiniteScalarQuantizer(LEVELS)
    z = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    g = jax.grad(lambda z: jnp.sum(fsq.apply({}, z)[0]))(z)
    # d/dz of tanh-bounded value / half-width: positive everywhere, no zero from the rounding
    assert (np.asarray(g) > 0).all()


@pytest.mark.parametrize("levels,num_codes,code_dim,key", [
    ((8, 5), 40, 3, "model.code_dim"), ((8, 5), 64, 2, "model.num_codes"),
    ((8, 1), 8, 2, "model.fsq_levels")])
def test_levels_that_disagree_with_the_config_name_the_key(levels, num_codes, code_dim, key):
    with pytest.raises(ValueError, match=key):
        check_levels(levels, num_codes, code_dim)


def test_tokenizer_with_fsq_encodes_decodes_and_has_no_codebook():
    model = Tokenizer(image_size=(16, 16), patch_size=4, width=32, depth=1, decoder_depth=1,
                      num_heads=2, num_codes=120, code_dim=3, max_frames=4, quantizer="fsq",
                      fsq_levels=(8, 5, 3))
    frames = jax.random.randint(jax.random.PRNGKey(3), (2, 3, 16, 16, 3), 0, 256).astype(jnp.uint8)
    v = nn.unbox(model.init({"params": jax.random.PRNGKey(0), "vq": jax.random.PRNGKey(1)},
                            frames))
    assert "vq_stats" not in v and "vq" not in v["params"]
    recon, tokens, _ = model.apply(v, frames)
    assert tokens.shape == (2, 3, 16) and int(tokens.max()) < 120
    # decoding the tokens gives the same frames as the quantised forward pass
    np.testing.assert_allclose(model.apply(v, tokens, method=Tokenizer.decode), recon, atol=1e-5)


def test_unknown_quantizer_is_a_clear_error():
    model = LatentActionModel(image_size=(16, 16), patch_size=8, width=32, depth=1,
                              decoder_depth=1, num_heads=2, num_codes=4, code_dim=8,
                              quantizer="lfq")
    frames = jnp.zeros((1, 2, 16, 16, 3), jnp.uint8)
    with pytest.raises(ValueError, match="model.quantizer.*'lfq'"):
        model.init({"params": jax.random.PRNGKey(0), "vq": jax.random.PRNGKey(1)}, frames)


def test_unknown_restart_sampling_is_an_error_at_init():
    model = Tokenizer(image_size=(16, 16), patch_size=4, width=32, depth=1, decoder_depth=1,
                      num_heads=2, num_codes=8, code_dim=4, restart_sampling="nearest")
    with pytest.raises(ValueError, match="model.restart_sampling.*'nearest'"):
        model.init({"params": jax.random.PRNGKey(0), "vq": jax.random.PRNGKey(1)},
                   jnp.zeros((1, 2, 16, 16, 3), jnp.uint8))
