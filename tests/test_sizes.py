"""Size presets: every size of every stage loads, and its parameter count (abstract shapes only,
nothing allocated) is within 5% of the table's figure; mesh presets shard the big sizes."""
import importlib
import json

import pytest

from experiments.configs import base
from genie_jax.plan import count_params
from tests.conftest import run_python

STAGES = ("tokenizer", "lam", "dynamics")


def _config(stage, size):
    return importlib.import_module(f"experiments.configs.{stage}").get_config(f"size={size}")


def test_every_stage_has_a_row_of_every_table_for_every_size():
    for table in (base.DATA, base.SCHEDULE, base.TOKENIZER, base.LAM, base.DYNAMICS, base.MESH):
        assert set(table) == set(base.SIZES)
    for stage in STAGES:
        assert set(base.PARAMS[stage]) == set(base.SIZES)
    for size, shape in base.MESH.items():
        assert len(shape) == 3 and list(shape).count(-1) <= 1, size


@pytest.mark.parametrize("stage", STAGES)
def test_parameter_counts_are_within_5_percent_of_the_table(stage):
    counted = {}
    for size in base.SIZES:
        c = _config(stage, size)
        assert tuple(c.mesh.shape) == base.MESH[size]
        # Sizes that share a model (1b and 11b tokenizers, tiny and cpu dynamics) count once.
        key = json.dumps(c.model.to_dict(), sort_keys=True, default=str) + str(c.data.resolution)
        if key not in counted:
            counted[key] = count_params(c)
        n, want = counted[key], base.PARAMS[stage][size]
        assert abs(n - want) <= 0.05 * want, f"{stage} size={size}: {n:,} params, table {want:,.0f}"


def test_pod_sizes_follow_genie():
    dyn = _config("dynamics", "11b")
    assert (dyn.data.batch_size, dyn.data.num_frames, dyn.train.steps) == (512, 16, 125_000)
    assert dyn.model.dtype == "bfloat16" and dyn.model.remat == "full"
    assert dyn.tokenizer.model.to_dict() == _config("tokenizer", "11b").model.to_dict()
    assert dyn.lam.model.to_dict() == _config("lam", "11b").model.to_dict()
    assert dyn.lam.model.num_codes == 8 and dyn.model.num_actions == 8  # Genie's |A| = 8
    with pytest.raises(ValueError, match="unknown size '2b'.*pod size \\(200m, 1b, 11b\\)"):
        _config("dynamics", "2b")


def test_fsdp_shards_every_large_parameter_under_the_11b_mesh():
    """Build the 11b dynamics engine over 256 simulated devices (abstract state only) and check
    that no parameter or optimizer-state leaf above 1M values is replicated."""
    out = run_python(r"""
import json, jax
import numpy as np
from experiments.configs import dynamics
from genie_jax.plan import build_engine_on
engine = build_engine_on(dynamics.get_config("size=11b"), jax.devices())
leaves = jax.tree_util.tree_leaves_with_path(
    {"params": engine.abstract_state["params"], "opt_state": engine.abstract_state["opt_state"]})
big = [(jax.tree_util.keystr(p), a) for p, a in leaves if np.prod(a.shape) > 2 ** 20]
print(json.dumps({"mesh": dict(engine.mesh.shape), "big": len(big),
                  "replicated": [k for k, a in big if a.sharding.is_fully_replicated],
                  "largest_shard": max(int(np.prod(a.sharding.shard_shape(a.shape)))
                                       for _, a in big),
                  "largest": max(int(np.prod(a.shape)) for _, a in big)}))
""", devices=256, timeout=600)
    r = json.loads(out.strip().splitlines()[-1])
    assert r["mesh"] == {"data": 1, "fsdp": 64, "tensor": 4}
    assert r["big"] > 100 and r["replicated"] == [], r["replicated"][:5]
    assert r["largest_shard"] * 256 == r["largest"]  # split over every device, fsdp x tensor
