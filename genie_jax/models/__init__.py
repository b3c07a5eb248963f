"""Flax Linen models.

Array-name suffix legend (used across the package):
  B batch, T frames (time), H/W pixel rows/cols, C channels, N patches (tokens) per frame,
  P values per patch (patch*patch*C), D model width, K heads, E head width, F MLP hidden,
  L latent (code) width, V codebook size / vocabulary.
"""
