"""Sweep files for `genie-jax sweep --spec=` (a package so that they import experiments.configs)."""
