"""Shared bits of the model tests."""
import jax


def jitted_apply(model):
    """`model.apply` compiled once per input signature. The tests call a model a few times on
    inputs of one shape; eagerly, every op of every call is its own small XLA compile, and those
    were most of the model tests' time."""
    return jax.jit(model.apply, static_argnames=("method",))
