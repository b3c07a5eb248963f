"""MaskGIT in one place: the training mask and loss, the unmasking schedule and the decode loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genie_jax.models.maskgit import (first_argmax, lowest_k_mask, maskgit_decode_frame,
                                     maskgit_loss, masked_counts, mbr_tokens, random_mask,
                                     sample_tokens)


def test_random_mask_rate_and_first_frame():
    m = random_mask(jax.random.PRNGKey(0), (64, 4, 16))
    assert not bool(m[:, 0].any())
    rate_B = jnp.mean(m[:, 1:].astype(jnp.float32), axis=(1, 2))
    assert 0.3 < float(rate_B.min()) and float(rate_B.max()) <= 1.0
    assert 0.65 < float(rate_B.mean()) < 0.85  # E[r] = 0.75


def test_next_frame_samples_mask_one_whole_frame_after_a_clear_past():
    key, shape = jax.random.PRNGKey(1), (256, 4, 16)
    plain = np.asarray(random_mask(key, shape))
    assert np.array_equal(np.asarray(random_mask(key, shape, next_frame_prob=0.0)), plain)
    m = np.asarray(random_mask(key, shape, next_frame_prob=0.5))
    assert not m[:, 0].any()
    full_BT = m.all(axis=2)
    # a next-frame sample: frames before its whole frame clear, frames after it as before
    picked = [b for b in range(shape[0]) if full_BT[b].any() and not (m[b] == plain[b]).all()]
    assert 0.35 * shape[0] < len(picked) < 0.65 * shape[0]
    for b in picked:
        t = int(np.argmax(full_BT[b]))
        assert not m[b, :t].any()
        assert np.array_equal(m[b, t + 1:], plain[b, t + 1:])
    unpicked = [b for b in range(shape[0]) if b not in picked]
    assert all(np.array_equal(m[b], plain[b]) for b in unpicked)
    assert len({int(np.argmax(full_BT[b])) for b in picked}) == 3  # t = 1, 2 and 3 all drawn


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


def _recording_logits(B, N, V):
    """Fixed random logits [B,N,V], and a logits_fn that returns them and records each frame it
    is given (`seen`)."""
    logits = jax.random.normal(jax.random.PRNGKey(0), (B, N, V))
    seen = []

    def logits_fn(frame_BN):
        seen.append(frame_BN)
        return logits
    return logits, logits_fn, seen


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_maskgit_decode_fills_the_frame(temperature):
    B, N, V, steps = 2, 6, 5, 3
    logits, logits_fn, seen = _recording_logits(B, N, V)

    out = jax.jit(lambda r: maskgit_decode_frame(logits_fn, B, N, r, mask_id=V, steps=steps,
                                                 temperature=temperature, schedule="cosine"))(
        jax.random.PRNGKey(1))
    assert out.shape == (B, N) and int(out.max()) < V and int(out.min()) >= 0
    if temperature == 0:
        np.testing.assert_array_equal(out, jnp.argmax(logits, -1))


def test_first_argmax_is_argmax_including_ties():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 50))
    x = x.at[0, 0, 40].set(9.0).at[0, 0, 7].set(9.0)   # a tie: the first index wins
    x = x.at[1, 2].set(0.0)                              # all equal
    np.testing.assert_array_equal(first_argmax(x), jnp.argmax(x, axis=-1))
    assert int(first_argmax(x)[0, 0]) == 7 and int(first_argmax(x)[1, 2]) == 0


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sample_tokens_draws_what_jax_categorical_draws(temperature):
    # The same Gumbel noise, so the same tokens as jax.random.categorical (the sampler's old
    # draw): seeded rollouts do not change with the faster argmax.
    logits = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (2, 64, 1024))
    for seed in range(4):
        r = jax.random.PRNGKey(seed)
        np.testing.assert_array_equal(sample_tokens(r, logits, temperature),
                                      jax.random.categorical(r, logits / temperature, axis=-1))


def test_lowest_k_mask_is_the_double_argsort_rank():
    conf = jnp.round(jax.random.normal(jax.random.PRNGKey(2), (3, 40)), 1)  # many ties
    conf = conf.at[0, 5:9].set(jnp.inf)
    rank = jnp.argsort(jnp.argsort(conf, axis=-1), axis=-1)
    for k in [0, 1, 13, 40]:
        np.testing.assert_array_equal(lowest_k_mask(conf, jnp.int32(k)), rank < k)


def test_decode_matches_the_reference_loop_token_for_token():
    # The old loop (jax.random.categorical, jnp.argmax, a double argsort) written out here:
    # the decode must give the same tokens, greedy and sampled.
    B, N, V, steps = 2, 32, 40, 6
    table = 2.0 * jax.random.normal(jax.random.PRNGKey(3), (V + 1, V))

    def logits_fn(frame_BN):  # depends on the whole frame, as the dynamics does
        e = jnp.take(table, frame_BN, axis=0)
        return e + 0.1 * jnp.mean(e, axis=1, keepdims=True)

    def reference(rng, temperature):
        counts = masked_counts(N, steps, "cosine")
        frame, masked = jnp.full((B, N), V, jnp.int32), jnp.ones((B, N), bool)
        for s in range(steps):
            logits = logits_fn(frame)
            r_sample, r_choice = jax.random.split(jax.random.fold_in(rng, s))
            sampled = (jax.random.categorical(r_sample, logits / temperature, axis=-1)
                       if temperature > 0 else jnp.argmax(logits, axis=-1))
            logp = jax.nn.log_softmax(logits, axis=-1)
            conf = jnp.take_along_axis(logp, sampled[..., None], axis=-1)[..., 0]
            if temperature > 0:
                conf = conf + temperature * (1.0 - (s + 1.0) / steps) * jax.random.gumbel(
                    r_choice, conf.shape)
            sampled = jnp.where(masked, sampled.astype(jnp.int32), frame)
            conf = jnp.where(masked, conf, jnp.inf)
            masked = jnp.argsort(jnp.argsort(conf, axis=-1), axis=-1) < counts[s]
            frame = jnp.where(masked, V, sampled)
        return frame

    for temperature in [0.0, 1.0, 2.0]:
        for seed in range(2):
            r = jax.random.PRNGKey(seed)
            got = jax.jit(lambda r: maskgit_decode_frame(
                logits_fn, B, N, r, mask_id=V, steps=steps, temperature=temperature,
                schedule="cosine"))(r)
            np.testing.assert_array_equal(got, jax.jit(lambda r: reference(r, temperature))(r))


@pytest.mark.parametrize("N", [16, 256, 12])
def test_halton_rank_is_a_permutation_that_spreads_the_first_tokens(N):
    from genie_jax.models.maskgit import halton_rank
    rank = halton_rank(N)
    assert sorted(rank.tolist()) == list(range(N))
    if N == 256:  # the first 16 decoded tokens of a 16x16 grid fall in most of its 4x4 blocks
        first = np.flatnonzero(rank < 16)  # (a raster order's first 16 touch only 4 of them)
        blocks = {(n // 16 // 4, n % 16 // 4) for n in first}
        assert len(blocks) >= 12


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_halton_order_decodes_in_rank_order(temperature):
    B, N, V, steps = 2, 16, 5, 4
    logits, logits_fn, seen = _recording_logits(B, N, V)

    out = maskgit_decode_frame(logits_fn, B, N, jax.random.PRNGKey(1), mask_id=V, steps=steps,
                               temperature=temperature, schedule="linear", order="halton")
    assert int(out.max()) < V
    if temperature == 0:
        np.testing.assert_array_equal(out, jnp.argmax(logits, -1))
    with pytest.raises(ValueError, match="order"):
        maskgit_decode_frame(logits_fn, B, N, jax.random.PRNGKey(1), mask_id=V, steps=steps,
                             temperature=0.0, schedule="linear", order="raster")


def test_mbr_picks_the_code_of_least_expected_squared_error():
    rng = np.random.default_rng(0)
    B, N, V, L = 2, 5, 7, 3
    codes_VL = rng.normal(size=(V, L)).astype(np.float32)
    logits_BNV = rng.normal(size=(B, N, V)).astype(np.float32) * 2
    p_BNV = np.exp(logits_BNV) / np.exp(logits_BNV).sum(-1, keepdims=True)
    d_VV = ((codes_VL[:, None] - codes_VL[None]) ** 2).sum(-1)  # |e_c - e_v|^2
    risk_BNV = np.einsum("bnv,cv->bnc", p_BNV, d_VV)
    np.testing.assert_array_equal(mbr_tokens(jnp.asarray(logits_BNV), jnp.asarray(codes_VL)),
                                  risk_BNV.argmin(-1))
    # a sure prediction is its own pick; an even split between two far codes is not either one
    sure = np.full((1, 1, V), -30.0, np.float32)
    sure[0, 0, 4] = 30.0
    assert int(mbr_tokens(jnp.asarray(sure), jnp.asarray(codes_VL))[0, 0]) == 4
    line_VL = np.array([[-1.0], [0.0], [1.0]], np.float32)  # codes at -1, 0 and 1
    split = np.array([[[0.0, -30.0, 0.0]]], np.float32)     # half -1, half +1
    assert int(mbr_tokens(jnp.asarray(split), jnp.asarray(line_VL))[0, 0]) == 1


def test_mbr_decode_fills_the_frame_deterministically():
    B, N, V, L = 2, 16, 8, 4
    codes_VL = jax.random.normal(jax.random.PRNGKey(1), (V, L))
    logits, logits_fn, _ = _recording_logits(B, N, V)
    out = [maskgit_decode_frame(logits_fn, B, N, jax.random.PRNGKey(s), mask_id=V, steps=4,
                                temperature=1.0, schedule="cosine", codes_VL=codes_VL)
           for s in (0, 1)]
    assert out[0].shape == (B, N) and int(out[0].max()) < V
    np.testing.assert_array_equal(out[0], out[1])  # no sampling noise, whatever the rng
    np.testing.assert_array_equal(out[0], mbr_tokens(logits, codes_VL))  # logits never change
