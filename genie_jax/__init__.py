"""genie_jax: Genie-style world models (video tokenizer, latent actions, MaskGIT dynamics) in JAX/Flax."""

__version__ = "0.1.0"
