"""Device mesh and the logical-axis vocabulary.

Mesh axes (physical):
  data    pure data parallelism: batch split, parameters replicated
  fsdp    batch split and parameters/optimizer state sharded (ZeRO-3 style)
  tensor  model parallelism inside a layer (heads, MLP hidden, vocabulary)

Logical axis names (the only names model code uses):
  parameters   embed, mlp, heads, kv, vocab, codes, latent, patch_in, pos, frame_pos, layers
               (the stacked-blocks axis of model.scan_layers)
  activations  act_batch, act_frame, act_patch, act_embed, act_mlp, act_heads, act_kv
The config's `sharding.rules` table maps each logical name onto mesh axes (or None).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

DEFAULT_RULES: tuple[tuple[str, object], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("codes", None),
    ("latent", None),
    ("patch_in", None),
    ("pos", None),
    ("frame_pos", None),
    ("layers", None),  # each chip holds every layer's slice of a stacked param
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_frame", None),
    ("act_patch", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv", None),
)


def rules_from_config(rules) -> tuple[tuple[str, object], ...]:
    """Config rules are a list of [name, axis-or-list-or-None]; flax wants tuples."""
    out = []
    for name, axes in rules:
        if isinstance(axes, (list, tuple)):
            axes = tuple(axes)
        out.append((str(name), axes))
    return tuple(out)


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh. A -1 entry absorbs the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh.shape must have {len(MESH_AXES)} entries {MESH_AXES}, got {shape}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh.shape may hold at most one -1, got {shape}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if len(devices) % known:
            raise ValueError(f"mesh.shape {shape} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh.shape {shape} needs {int(np.prod(shape))} devices, "
                         f"but {len(devices)} are available")
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules):
    """Enter the mesh and the logical rules together, for tracing and running steps."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
