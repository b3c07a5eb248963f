"""MaskGIT in one place: the training mask and loss, the unmasking schedule and the decode loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genie_jax.models.maskgit import maskgit_decode_frame, maskgit_loss, masked_counts, random_mask


def test_random_mask_rate_and_first_frame():
    m = random_mask(jax.random.PRNGKey(0), (64, 4, 16))
    assert not bool(m[:, 0].any())
    rate_B = jnp.mean(m[:, 1:].astype(jnp.float32), axis=(1, 2))
    assert 0.3 < float(rate_B.min()) and float(rate_B.max()) <= 1.0
    assert 0.65 < float(rate_B.mean()) < 0.85  # E[r] = 0.75


def test_maskgit_loss_counts_masked_tokens_only():
    tokens = jnp.array([[[0, 1], [2, 3]]])
    logits = jax.nn.one_hot(jnp.array([[[0, 1], [2, 0]]]), 4) * 10.0   # last token wrong
    only_right = jnp.array([[[False, False], [True, False]]])
    ce, m = maskgit_loss(logits, tokens, only_right)
    assert float(m["masked_acc"]) == 1.0 and float(ce) < 1e-3
    with_wrong = jnp.array([[[False, False], [True, True]]])
    ce2, m2 = maskgit_loss(logits, tokens, with_wrong)
    assert float(m2["masked_acc"]) == 0.5 and float(ce2) > 4.0


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square"])
@pytest.mark.parametrize("N,steps", [(16, 4), (16, 1), (5, 8), (256, 25)])
def test_schedule_unmasks_everything_by_the_last_step(schedule, N, steps):
    c = masked_counts(N, steps, schedule)
    assert len(c) == steps and c[-1] == 0
    assert all(b <= a for a, b in zip([N] + c, c))
    assert all(b < a or a == 0 for a, b in zip([N] + c, c))  # progress every step until done


def test_cosine_unmasks_slowly_first():
    c = masked_counts(256, 8, "cosine")
    assert 256 - c[0] < c[-2] - c[-1]  # few tokens fixed first, many at the end


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_maskgit_decode_fills_the_frame(temperature):
    B, N, V, steps = 2, 6, 5, 3
    logits = jax.random.normal(jax.random.PRNGKey(0), (B, N, V))
    seen = []

    def logits_fn(frame_BN):
        seen.append(frame_BN)
        return logits

    out = jax.jit(lambda r: maskgit_decode_frame(logits_fn, B, N, r, mask_id=V, steps=steps,
                                                 temperature=temperature, schedule="cosine"))(
        jax.random.PRNGKey(1))
    assert out.shape == (B, N) and int(out.max()) < V and int(out.min()) >= 0
    if temperature == 0:
        np.testing.assert_array_equal(out, jnp.argmax(logits, -1))
