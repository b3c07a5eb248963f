"""The metrics of genie_jax, as pure functions.

jax, on frames in [0, 1] with any leading axes (training eval and `genie-jax eval`):
  psnr, ssim (Gaussian window 11, sigma 1.5) -> one value per image.

numpy, on host arrays (`genie-jax eval`, genie_jax/evaluation.py):
  contingency_table (of two labellings; negative labels are unknown and dropped),
  entropy_of_counts, mutual_information, normalized_mutual_information (latent vs true actions),
  codebook_usage (codes used, perplexity), per_step_mean, delta_psnr_per_step (controllability)
  and its standard error over clips (delta_psnr_stderr_per_step),
  value_at_step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def psnr(a_XHWC: jax.Array, b_XHWC: jax.Array, max_val: float = 1.0) -> jax.Array:
    """Per-image PSNR in dB over the last three axes."""
    mse = jnp.mean(jnp.square(a_XHWC.astype(jnp.float32) - b_XHWC.astype(jnp.float32)),
                   axis=(-3, -2, -1))
    return 10.0 * jnp.log10(max_val ** 2 / jnp.maximum(mse, 1e-10))


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> jax.Array:
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    g = jnp.exp(-0.5 * jnp.square(x / sigma))
    return g / jnp.sum(g)


def _blur(x_MHW: jax.Array, g: jax.Array) -> jax.Array:
    # Separable 'valid' Gaussian filter over H then W.
    x = jax.vmap(lambda im: jax.vmap(lambda col: jnp.convolve(col, g, mode="valid"), 1, 1)(im))(x_MHW)
    x = jax.vmap(lambda im: jax.vmap(lambda row: jnp.convolve(row, g, mode="valid"))(im))(x)
    return x


def ssim(a_XHWC: jax.Array, b_XHWC: jax.Array, max_val: float = 1.0,
         window: int = 11, sigma: float = 1.5) -> jax.Array:
    """Per-image SSIM (Wang et al. 2004), averaged over channels and valid window positions."""
    lead = a_XHWC.shape[:-3]
    H, W, C = a_XHWC.shape[-3:]
    window = min(window, H, W)
    g = _gaussian_kernel(window, sigma)
    a = jnp.moveaxis(a_XHWC.astype(jnp.float32).reshape(-1, H, W, C), -1, 1).reshape(-1, H, W)
    b = jnp.moveaxis(b_XHWC.astype(jnp.float32).reshape(-1, H, W, C), -1, 1).reshape(-1, H, W)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    var_a = _blur(a * a, g) - mu_a ** 2
    var_b = _blur(b * b, g) - mu_b ** 2
    cov = _blur(a * b, g) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return jnp.mean(s.reshape(-1, C, *s.shape[-2:]), axis=(1, 2, 3)).reshape(lead)


# ---- evaluation metrics on host arrays (numpy; pure, hand-checkable) -------------------------

def contingency_table(x, y):
    """Counts [len(unique x), len(unique y)] of the pairs (x_i, y_i); pairs where either label is
    negative (unknown) are dropped. -> (table int64, x labels, y labels)."""
    import numpy as np
    x, y = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"label arrays differ in size: {x.shape} vs {y.shape}")
    keep = (x >= 0) & (y >= 0)
    x, y = x[keep], y[keep]
    xs, xi = np.unique(x, return_inverse=True)
    ys, yi = np.unique(y, return_inverse=True)
    table = np.zeros((len(xs), len(ys)), np.int64)
    np.add.at(table, (xi, yi), 1)
    return table, xs, ys


def entropy_of_counts(counts) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative counts."""
    import numpy as np
    c = np.asarray(counts, np.float64).reshape(-1)
    n = c.sum()
    if n <= 0:
        return 0.0
    p = c[c > 0] / n
    return float(-np.sum(p * np.log(p)))


def mutual_information(table) -> float:
    """Mutual information (nats) between the row and column variables of a contingency table."""
    import numpy as np
    t = np.asarray(table, np.float64)
    n = t.sum()
    if n <= 0:
        return 0.0
    pxy = t / n
    px, py = pxy.sum(1, keepdims=True), pxy.sum(0, keepdims=True)
    nz = pxy > 0
    return float(max(0.0, np.sum(pxy[nz] * np.log(pxy[nz] / (px @ py)[nz]))))


def normalized_mutual_information(table) -> float:
    """NMI = I(X;Y) / mean(H(X), H(Y)) (the arithmetic normalisation, as sklearn's default).

    1 when one labelling determines the other (up to renaming), 0 when independent. Both
    labellings constant: 1 (they agree trivially). Empty table: nan.
    """
    import numpy as np
    t = np.asarray(table, np.float64)
    if t.sum() <= 0:
        return float("nan")
    hx, hy = entropy_of_counts(t.sum(1)), entropy_of_counts(t.sum(0))
    if hx + hy == 0:
        return 1.0
    return float(min(1.0, mutual_information(t) / (0.5 * (hx + hy))))


def codebook_usage(counts) -> dict:
    """How many codes of a codebook were chosen, from per-code counts [V].

    -> {'num_codes', 'codes_used', 'usage' (fraction used), 'perplexity' (exp of the entropy of
    the code distribution: V when uniform, 1 when one code takes everything)}."""
    import numpy as np
    c = np.asarray(counts, np.float64).reshape(-1)
    used = int(np.sum(c > 0))
    return {"num_codes": int(c.size), "codes_used": used, "usage": used / max(c.size, 1),
            "perplexity": float(np.exp(entropy_of_counts(c)))}


def per_step_mean(values_CS) -> list:
    """Per-step mean over clips of a [clips, steps] array (NaN entries ignored) -> list[steps]."""
    import numpy as np
    v = np.asarray(values_CS, np.float64)
    if v.ndim != 2:
        raise ValueError(f"expected [clips, steps], got shape {v.shape}")
    return [float(x) for x in np.nanmean(v, axis=0)]


def pooled_psnr(psnr_CS, axis=None):
    """PSNR of the mean squared error over clips (NaN entries ignored), from per-clip PSNRs
    [clips, steps]: per step (axis=0) or over all (axis=None). The mean of per-clip PSNRs lets a
    few exact matches decide it: an identical frame scores 100 dB (the 1e-10 MSE floor of
    `psnr`), so repeating the last frame of a clip where nothing moved adds 100/C dB to the
    mean. Pooling the errors first counts such a frame as one error of 0."""
    import numpy as np
    mse = np.power(10.0, -np.asarray(psnr_CS, np.float64) / 10.0)
    m = np.nanmean(mse, axis=axis)
    out = -10.0 * np.log10(np.maximum(m, 1e-10))
    return [float(x) for x in out] if axis is not None else float(out)


def delta_psnr_per_step(psnr_inferred_CS, psnr_random_CS) -> list:
    """Controllability per rollout step: mean over clips of PSNR(x_t, x̂_t with inferred actions)
    minus PSNR(x_t, x̂_t with random actions). Inputs [clips, steps] -> list[steps]."""
    import numpy as np
    a, b = np.asarray(psnr_inferred_CS, np.float64), np.asarray(psnr_random_CS, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two [clips, steps] arrays of one shape; got {a.shape}, {b.shape}")
    return per_step_mean(a - b)


def delta_psnr_stderr_per_step(psnr_inferred_CS, psnr_random_CS) -> list:
    """Standard error of `delta_psnr_per_step` per step: the sample standard deviation over clips
    of the paired difference (the same clip under both action sets), over sqrt(clips); NaN
    entries ignored, NaN where fewer than 2 clips. On 30 CoinRun clips it was 0.3-0.4 dB: eval
    seeds 0, 1, 2 gave one world's delta-PSNR(t=4) as 1.14, 0.34 and 0.78
    (experiments/RESULTS.md, "How much one eval can tell")."""
    import numpy as np
    a, b = np.asarray(psnr_inferred_CS, np.float64), np.asarray(psnr_random_CS, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two [clips, steps] arrays of one shape; got {a.shape}, {b.shape}")
    d = a - b
    out = []
    for col in d.T:
        col = col[~np.isnan(col)]
        out.append(float(np.std(col, ddof=1) / np.sqrt(len(col))) if len(col) > 1
                   else float("nan"))
    return out


def value_at_step(per_step: list, t: int):
    """per_step[t-1] (t counts generated frames from 1), or None when the rollout is shorter."""
    return per_step[t - 1] if 1 <= t <= len(per_step) else None
