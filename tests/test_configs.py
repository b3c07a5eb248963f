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
            "tokenizer_coinrun.py": ["size=cpu", "size=coinrun,dir=/data/x"]}


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
