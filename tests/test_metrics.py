import numpy as np

from genie_jax.metrics import pooled_psnr, psnr, ssim


def test_psnr_hand_computed():
    a = np.zeros((1, 4, 4, 3), np.float32)
    b = np.full((1, 4, 4, 3), 0.1, np.float32)  # mse 0.01 -> 20 dB
    np.testing.assert_allclose(psnr(a, b), [20.0], rtol=1e-5)
    b[..., 0] = 0.0  # mse = 2/3 * 0.01
    np.testing.assert_allclose(psnr(a, b), [10 * np.log10(1 / (0.01 * 2 / 3))], rtol=1e-5)


def test_ssim_identity_constant_shift_and_hand_value():
    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(ssim(a, a), [1.0, 1.0], atol=1e-5)
    # Constant images: variances 0, so SSIM = (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1).
    x, y = np.full((1, 16, 16, 1), 0.2, np.float32), np.full((1, 16, 16, 1), 0.6, np.float32)
    c1 = 0.01 ** 2
    want = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    np.testing.assert_allclose(ssim(x, y), [want], rtol=1e-4)
    noisy = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    assert (np.asarray(ssim(a, noisy)) < 0.9).all()


def test_pooled_psnr_counts_an_exact_match_as_one_zero_error():
    # two clips x two steps: MSE 0.01 and 0.0001 at step 0 (20 and 40 dB); an exact match
    # (100 dB, the floor) and 0.01 at step 1; a NaN (a clip left out) is ignored
    p = np.array([[20.0, 100.0], [40.0, 20.0], [np.nan, np.nan]])
    want0 = -10 * np.log10((0.01 + 0.0001) / 2)
    want1 = -10 * np.log10((1e-10 + 0.01) / 2)
    np.testing.assert_allclose(pooled_psnr(p, axis=0), [want0, want1], rtol=1e-9)
    np.testing.assert_allclose(pooled_psnr(p), -10 * np.log10((0.01 + 0.0001 + 1e-10 + 0.01) / 4),
                               rtol=1e-9)
    assert np.nanmean(p[:, 1]) - pooled_psnr(p, axis=0)[1] > 35  # the mean is 60 dB, pooled 23
