import glob
import importlib.util
import os

import ml_collections
import pytest

from tests.conftest import REPO

CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "experiments", "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "base")))
VARIANTS = {"tokenizer.py": ["size=tiny", "size=test", "size=coinrun"],
            "lam.py": ["size=tiny", "size=test", "size=coinrun"],
            "dynamics.py": ["size=tiny", "size=test", "size=coinrun",
                            "size=test,lam_mode=cotrain"],
            "dynamics_action_add.py": ["size=test"],
            "dynamics_action_token.py": ["size=test"],
            "tokenizer_coinrun.py": ["size=cpu", "size=coinrun,dir=/data/x", "budget=quick",
                                     "budget=quality"],
            "lam_coinrun.py": [None, "budget=quick", "budget=quality"],
            "dynamics_coinrun.py": [None, "budget=quick", "budget=quality,lam_mode=cotrain"]}


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_builds_its_stage(path):
    mod = _load(path)
    from genie_jax.stages import get_stage
    for arg in VARIANTS.get(os.path.basename(path), [None]):
        cfg = mod.get_config(arg)
        assert isinstance(cfg, ml_collections.ConfigDict)
        assert cfg.stage and "model" in cfg
        stage = get_stage(cfg)
        assert stage.name == cfg.stage
        assert tuple(cfg.model.image_size) == (cfg.data.resolution,) * 2


def test_unknown_knob_is_an_error():
    mod = _load(os.path.join(REPO, "experiments", "configs", "tokenizer.py"))
    with pytest.raises(ValueError, match="unknown config knob 'sise'"):
        mod.get_config("sise=tiny")


@pytest.mark.parametrize("name", ["tokenizer_coinrun.py", "lam_coinrun.py", "dynamics_coinrun.py"])
def test_coinrun_budgets_grow_and_unknown_budget_is_an_error(name):
    mod = _load(os.path.join(REPO, "experiments", "configs", name))
    steps = [mod.get_config(f"budget={b}").train.steps for b in ("smoke", "quick", "quality")]
    assert steps == sorted(steps) and steps[0] < steps[1]
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        mod.get_config("budget=huge")


def test_coinrun_dynamics_matches_the_stages_it_builds_on():
    cfgs = {n: _load(os.path.join(REPO, "experiments", "configs", f"{n}_coinrun.py"))
            .get_config("dir=d,budget=quick") for n in ("tokenizer", "lam")}
    dyn = _load(os.path.join(REPO, "experiments", "configs", "dynamics_coinrun.py")).get_config(
        "dir=d,budget=quick,tokenizer=t,lam=l")
    assert dyn.tokenizer.model.to_dict() == cfgs["tokenizer"].model.to_dict()
    assert dyn.lam.model.to_dict() == cfgs["lam"].model.to_dict()
    assert (dyn.tokenizer.workdir, dyn.lam.workdir, dyn.data.dir) == ("t", "l", "d")
    assert dyn.data.num_frames == cfgs["tokenizer"].data.num_frames  # the tokenizer's window
