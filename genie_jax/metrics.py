"""Image metrics on frames in [0, 1]: PSNR and SSIM (Gaussian window 11, sigma 1.5)."""
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
