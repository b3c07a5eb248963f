import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from genie_jax.models.layers import patchify, unpatchify
from genie_jax.models.tokenizer import Tokenizer
from tests.models.helpers import jitted_apply


def _model():
    return Tokenizer(image_size=(16, 16), patch_size=4, width=32, depth=1, decoder_depth=1,
                     num_heads=2, num_codes=32, code_dim=8, max_frames=6)


def _vars(model, frames):
    keys = {"params": jax.random.PRNGKey(0), "vq": jax.random.PRNGKey(1)}
    return nn.unbox(jax.jit(model.init)(keys, frames))


def test_patchify_roundtrip():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 16, 12, 3))
    p = patchify(x, 4)
    assert p.shape == (2, 3, 12, 48)
    np.testing.assert_array_equal(unpatchify(p, 4, 16, 12), x)
    np.testing.assert_array_equal(p[0, 0, 1], x[0, 0, 0:4, 4:8].reshape(-1))


def test_encode_decode_interface_and_causality():
    model = _model()
    frames = jax.random.randint(jax.random.PRNGKey(3), (2, 5, 16, 16, 3), 0, 256).astype(jnp.uint8)
    v = _vars(model, frames)
    apply = jitted_apply(model)
    _, tokens, _ = apply(v, frames, method=Tokenizer.encode)
    assert tokens.shape == (2, 5, 16) and tokens.dtype == jnp.int32
    out = apply(v, tokens, method=Tokenizer.decode)
    assert out.shape == (2, 5, 16, 16, 3)
    # Tokens and decoded frames at t do not depend on frames after t.
    frames2 = frames.at[:, 3:].set(255 - frames[:, 3:])
    _, tokens2, _ = apply(v, frames2, method=Tokenizer.encode)
    np.testing.assert_array_equal(tokens2[:, :3], tokens[:, :3])
    recon, _, _ = apply(v, frames)
    recon2, _, _ = apply(v, frames2)
    np.testing.assert_allclose(recon2[:, :3], recon[:, :3], atol=1e-5)
    out2 = apply(v, tokens.at[:, 4].set(0), method=Tokenizer.decode)
    np.testing.assert_allclose(out2[:, :4], out[:, :4], atol=1e-5)


def test_bad_frames_get_clear_errors():
    model = _model()
    frames = jnp.zeros((1, 2, 16, 16, 3), jnp.uint8)
    v = _vars(model, frames)
    with pytest.raises(ValueError, match=r"model.image_size"):
        model.apply(v, jnp.zeros((1, 2, 8, 8, 3), jnp.uint8))
    with pytest.raises(ValueError, match=r"uint8 or float"):
        model.apply(v, jnp.zeros((1, 2, 16, 16, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"max_frames"):
        model.apply(v, jnp.zeros((1, 7, 16, 16, 3), jnp.uint8))


def test_per_frame_tokenizer_codes_every_frame_alone():
    """temporal='none': no temporal attention; a frame has the same tokens and reconstruction
    in any window, of any length (even past max_frames: every frame is its own window)."""
    model = Tokenizer(image_size=(16, 16), patch_size=4, width=32, depth=1, decoder_depth=1,
                      num_heads=2, num_codes=32, code_dim=8, max_frames=2, temporal="none")
    frames = jax.random.randint(jax.random.PRNGKey(3), (2, 5, 16, 16, 3), 0, 256).astype(jnp.uint8)
    v = _vars(model, frames)
    assert not any("time" in k for k in v["params"]["encoder"]["block0"])
    apply = jitted_apply(model)
    recon, tokens, _ = apply(v, frames)
    recon1, tokens1, _ = apply(v, frames[:, 3:4])
    np.testing.assert_array_equal(tokens1[:, 0], tokens[:, 3])
    np.testing.assert_allclose(recon1[:, 0], recon[:, 3], atol=1e-5)
    # a later frame changes nothing of an earlier one, and an earlier one nothing of a later one
    _, tokens2, _ = apply(v, frames.at[:, :3].set(255 - frames[:, :3]))
    np.testing.assert_array_equal(tokens2[:, 3:], tokens[:, 3:])
    with pytest.raises(ValueError, match=r"model.temporal"):
        bad = Tokenizer(image_size=(16, 16), patch_size=4, width=32, depth=1, decoder_depth=1,
                        num_heads=2, num_codes=32, code_dim=8, temporal="acausal")
        bad.init(jax.random.PRNGKey(0), frames[:, :1])
