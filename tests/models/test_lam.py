import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from genie_jax.models.lam import LatentActionModel, lam_loss
from tests.models.helpers import jitted_apply


def _model(**kw):
    return LatentActionModel(**{**dict(image_size=(8, 8), patch_size=4, width=16, depth=1,
                                       decoder_depth=1, num_heads=2, num_codes=6, code_dim=4,
                                       max_frames=6), **kw})


def _frames(seed, T=5):
    return jax.random.randint(jax.random.PRNGKey(seed), (2, T, 8, 8, 3), 0, 256).astype(jnp.uint8)


def _vars(model, frames):
    keys = {"params": jax.random.PRNGKey(0), "vq": jax.random.PRNGKey(1)}
    return nn.unbox(jax.jit(model.init)(keys, frames))


def test_shapes_one_action_per_transition():
    model, frames = _model(), _frames(0)
    v = _vars(model, frames)
    apply = jitted_apply(model)
    pred, codes, aux = apply(v, frames)
    assert pred.shape == (2, 4, 8, 8, 3)
    assert codes.shape == (2, 4) and codes.dtype == jnp.int32
    assert int(codes.min()) >= 0 and int(codes.max()) < 6
    assert v["params"]["vq"]["codebook"].shape == (6, 4)
    loss, m = lam_loss(pred, frames, aux)
    assert np.isfinite(float(loss)) and float(m["lam_mse"]) > 0


def test_action_t_ignores_frames_after_t_plus_1():
    model, frames = _model(), _frames(1)
    v = _vars(model, frames)
    apply = jitted_apply(model)
    q, codes, _ = apply(v, frames, method=LatentActionModel.encode)
    # Change frames 3 and 4: a_0, a_1 (transitions 0->1, 1->2) must not move; a_2 (2->3) must.
    frames2 = frames.at[:, 3:].set(255 - frames[:, 3:])
    q2, codes2, _ = apply(v, frames2, method=LatentActionModel.encode)
    np.testing.assert_allclose(q2[:, :2], q[:, :2], atol=1e-5)
    np.testing.assert_array_equal(codes2[:, :2], codes[:, :2])
    # The pre-quantisation latent of a_2 does see frame 3 (checked through the encoder output).
    z = apply(v, frames, method=LatentActionModel.latents)
    z2 = apply(v, frames2, method=LatentActionModel.latents)
    np.testing.assert_allclose(z2[:, :2], z[:, :2], atol=1e-5)
    assert float(jnp.max(jnp.abs(z2[:, 2] - z[:, 2]))) > 1e-4


def test_decoder_prediction_of_frame_t_plus_1_uses_only_frames_le_t_and_a_le_t():
    model, frames = _model(), _frames(2)
    v = _vars(model, frames)
    apply = jitted_apply(model)
    q, _, _ = apply(v, frames, method=LatentActionModel.encode)
    ctx = frames[:, :-1]
    pred = apply(v, ctx, q, method=LatentActionModel.decode)
    # Changing context frame 3 or action 3 leaves predictions of frames 1..3 unchanged.
    pred2 = apply(v, ctx.at[:, 3].set(0), q.at[:, 3].set(-q[:, 3]),
                        method=LatentActionModel.decode)
    np.testing.assert_allclose(pred2[:, :3], pred[:, :3], atol=1e-5)
    assert float(jnp.max(jnp.abs(pred2[:, 3] - pred[:, 3]))) > 1e-4
    # The action of transition 1 changes the prediction of frame 2 (decoder output 1).
    pred3 = apply(v, ctx, q.at[:, 1].set(-q[:, 1]), method=LatentActionModel.decode)
    np.testing.assert_allclose(pred3[:, :1], pred[:, :1], atol=1e-5)
    assert float(jnp.max(jnp.abs(pred3[:, 1] - pred[:, 1]))) > 1e-4


def test_change_weight_counts_errors_where_the_frame_changed():
    """change_weight 0 is the plain MSE; with c > 0 an error on a pixel that changed between
    frames t and t+1 costs more than the same error on a pixel that did not."""
    frames = jnp.zeros((1, 2, 4, 4, 3), jnp.uint8).at[:, 1, 0, 0].set(255)  # one pixel changes
    target = frames[:, 1:].astype(jnp.float32) / 255.0
    aux = {"vq_loss": jnp.zeros(()), "perplexity": jnp.ones(()), "batch_usage": jnp.ones(())}
    at_change = target.at[:, :, 0, 0].add(-0.5)    # the error on the changed pixel
    elsewhere = target.at[:, :, 3, 3].add(0.5)     # the same error on a still one
    for pred in (at_change, elsewhere):
        plain, m = lam_loss(pred, frames, aux)
        np.testing.assert_allclose(float(plain), float(m["lam_mse"]), rtol=1e-6)
        np.testing.assert_allclose(float(lam_loss(pred, frames, aux, change_weight=0.0)[0]),
                                   float(plain), rtol=1e-6)
    w_change = float(lam_loss(at_change, frames, aux, change_weight=20.0)[0])
    w_still = float(lam_loss(elsewhere, frames, aux, change_weight=20.0)[0])
    # weights 21 and 1 over 16 pixels (mean 2.25): 0.25 * 21 / 16 / 2.25 and 0.25 / 16 / 2.25
    np.testing.assert_allclose(w_change, 0.25 * 21 / 16 / 2.25, rtol=1e-5)
    np.testing.assert_allclose(w_still, 0.25 / 16 / 2.25, rtol=1e-5)
    # the reported lam_mse stays the plain MSE
    np.testing.assert_allclose(float(lam_loss(at_change, frames, aux, change_weight=20.0)[1]
                                     ["lam_mse"]), 0.25 / 16, rtol=1e-5)
