import glob
import importlib.util
import json
import os

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from tests.conftest import REPO

CONFIG_DIR = os.path.join(REPO, "experiments", "configs")
CONFIGS = sorted(p for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
                 if not os.path.basename(p).startswith(("_", "base")))
VARIANTS = {"tokenizer.py": ["size=tiny", "size=test", "size=coinrun"],
            "lam.py": ["size=tiny", "size=test", "size=coinrun"],
            "dynamics.py": ["size=tiny", "size=test", "size=coinrun",
                            "size=test,lam_mode=cotrain", "size=test,action_mode=add",
                            "size=test,temporal_pos=rope",
                            "size=tiny,action_mode=token,lam_mode=cotrain"],
            "tokenizer_coinrun.py": ["size=cpu", "size=coinrun,dir=/data/x", "budget=smoke",
                                     "budget=quick", "budget=default", "budget=quality"],
            "lam_coinrun.py": [None, "budget=smoke", "budget=quick", "budget=quality"],
            "dynamics_coinrun.py": [None, "budget=quick", "budget=quality,lam_mode=cotrain",
                                    "budget=smoke,action_mode=add", "budget=smoke,temporal_pos=rope"]}


def _load(name_or_path):
    path = name_or_path if os.sep in name_or_path else os.path.join(CONFIG_DIR, name_or_path)
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _train_flags(*args) -> ml_collections.ConfigDict:
    """The config as `genie-jax train` parses it (genie_jax/commands/train_cmd.py)."""
    argv = ["genie-jax", *args]
    fv = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                             sys_argv=argv)  # overrides are found in argv
    fv(argv)
    return holder.value


def test_every_config_has_variants_listed():
    assert {os.path.basename(p) for p in CONFIGS} == set(VARIANTS)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_builds_its_stage(path):
    mod = _load(path)
    from genie_jax.stages import get_stage
    for arg in VARIANTS[os.path.basename(path)]:
        cfg = mod.get_config(arg)
        assert isinstance(cfg, ml_collections.ConfigDict)
        assert cfg.stage and "model" in cfg
        stage = get_stage(cfg)
        assert stage.name == cfg.stage
        assert tuple(cfg.model.image_size) == (cfg.data.resolution,) * 2


def test_unknown_knob_is_an_error():
    with pytest.raises(ValueError, match="unknown config knob 'sise'"):
        _load("tokenizer.py").get_config("sise=tiny")
    with pytest.raises(ValueError, match="unknown size 'huge' \\(test, tiny, coinrun\\)"):
        _load("lam.py").get_config("size=huge")
    with pytest.raises(ValueError, match="unknown action_mode 'sum' \\(token, add\\)"):
        _load("dynamics.py").get_config("action_mode=sum")
    with pytest.raises(ValueError, match="unknown temporal_pos 'abs' \\(learned, rope\\)"):
        _load("dynamics_coinrun.py").get_config("temporal_pos=abs")


def test_temporal_pos_knob_reaches_the_dynamics_model():
    from genie_jax.stages import get_stage
    cfg = _load("dynamics.py").get_config("size=test,temporal_pos=rope")
    assert get_stage(cfg).model.temporal_pos == "rope"
    assert _load("dynamics.py").get_config("size=test").model.temporal_pos == "learned"


def test_knobs_take_the_type_of_their_default_and_bad_values_are_named():
    base = _load("base.py")
    knobs = base.parse_arg("steps=10,lr=0.5,fast=yes,name=x", steps=1, lr=1.0, fast=False, name="")
    assert (knobs.steps, knobs.lr, knobs.fast, knobs.name) == (10, 0.5, True, "x")
    assert [type(knobs[k]) for k in ("steps", "lr", "fast", "name")] == [int, float, bool, str]
    assert base.parse_arg("fast=False", fast=True).fast is False
    assert base.parse_arg(None, steps=3).steps == 3
    for arg, match in [("steps=ten", "steps='ten' is not an int"),
                       ("lr=fast", "lr='fast' is not a float"),
                       ("fast=maybe", "fast='maybe' is not a bool"),
                       ("steps", "'steps' .* no value")]:
        with pytest.raises(ValueError, match=match):
            base.parse_arg(arg, steps=1, lr=1.0, fast=False)
    with pytest.raises(TypeError, match="mesh"):
        base.parse_arg("mesh=1", mesh=(1, 1))


def test_tokenizer_and_lam_overrides_reach_the_dynamics_model_by_reference():
    cfg = f"--config={CONFIG_DIR}/dynamics.py:size=test"
    c = _train_flags(cfg, "--config.tokenizer.model.num_codes=512",
                     "--config.tokenizer.model.patch_size=8", "--config.lam.model.num_codes=8",
                     "--config.tokenizer.model.image_size=(48,48)")
    assert (c.model.num_codes, c.model.patch_size, c.model.num_actions) == (512, 8, 8)
    assert c.model.image_size == c.lam.model.image_size == (48, 48)
    # data.resolution reaches every image size; data.num_frames the sampling window
    c = _train_flags(f"--config={CONFIG_DIR}/dynamics_coinrun.py:budget=smoke",
                     "--config.data.resolution=32", "--config.data.num_frames=6")
    assert c.tokenizer.model.image_size == c.lam.model.image_size == c.model.image_size == (32, 32)
    assert c.sampling.max_frames == 6
    # Setting a copy changes only the copy, so the stage's consistency check still sees it.
    c = _train_flags(cfg, "--config.model.num_codes=7")
    assert (c.model.num_codes, c.tokenizer.model.num_codes) == (7, 64)
    # The trainer writes config.json with the references resolved; read_run_config reads it back.
    c = _train_flags(cfg, "--config.tokenizer.model.num_codes=512")
    back = ml_collections.ConfigDict(json.loads(c.to_json_best_effort(indent=2)))
    assert back.model.num_codes == back.tokenizer.model.num_codes == 512
    assert back.to_dict() == json.loads(json.dumps(c.to_dict()))
    assert back.model.image_size == [16, 16]  # JSON has no tuples; the stages take any sequence


def test_tokenizer_image_size_follows_the_data_resolution():
    c = _train_flags(f"--config={CONFIG_DIR}/tokenizer.py:size=test", "--config.data.resolution=24")
    assert c.model.image_size == (24, 24)
    c = _train_flags(f"--config={CONFIG_DIR}/lam.py:size=test", "--config.model.image_size=(8,8)")
    assert (c.model.image_size, c.data.resolution) == ((8, 8), 16)


@pytest.mark.parametrize("stage", ["tokenizer", "lam", "dynamics"])
def test_the_budget_table_drives_the_coinrun_configs(stage):
    base, mod = _load("base.py"), _load(f"{stage}_coinrun.py")
    row = base.COINRUN_BUDGET[stage]
    for budget, steps in zip(base.BUDGETS, row["steps"]):
        c = mod.get_config(f"budget={budget}")
        assert c.train.steps == steps
        assert c.train.eval_every == c.checkpoint.every
        # exactly `evals` evaluations, the last at the final step (trainer.due)
        assert sum(s % c.train.eval_every == 0 or s == steps for s in range(1, steps + 1)) \
            == row["evals"]
        assert c.train.log_every == row["log_every"]
    assert list(row["steps"]) == sorted(row["steps"]) and row["steps"][0] < row["steps"][1]
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        mod.get_config("budget=huge")


def test_coinrun_dynamics_matches_the_stages_it_builds_on():
    cfgs = {n: _load(f"{n}_coinrun.py").get_config("dir=d,budget=quick")
            for n in ("tokenizer", "lam")}
    dyn = _load("dynamics_coinrun.py").get_config("dir=d,budget=quick,tokenizer=t,lam=l")
    assert dyn.tokenizer.model.to_dict() == cfgs["tokenizer"].model.to_dict()
    assert dyn.lam.model.to_dict() == cfgs["lam"].model.to_dict()
    assert (dyn.tokenizer.workdir, dyn.lam.workdir, dyn.data.dir) == ("t", "l", "d")
    # the per-frame tokenizer trains on single frames, as many per step as 4-frame windows gave
    tok = cfgs["tokenizer"].data
    assert (tok.num_frames, tok.batch_size) == (1, 16) and dyn.data.num_frames == 4
    causal = _load("tokenizer_coinrun.py").get_config("dir=d,budget=quick,temporal=causal").data
    assert (causal.num_frames, causal.batch_size) == (4, 4)
    # the choices that make the quickstart world respond (experiments/RESULTS.md, "The
    # quickstart world responds"): no LAM commitment loss, the action on every patch, whole
    # next-frame targets in half the samples; the Genie-style settings stay one knob away
    assert cfgs["lam"].model.commitment == 0.0 and cfgs["tokenizer"].model.commitment == 0.25
    # the LAM's loss weights what changed between the frames ("400 episodes" there)
    assert cfgs["lam"].loss.change_weight == 60.0
    assert (dyn.model.action_mode, dyn.loss.next_frame_prob) == ("add", 0.5)
    # and its decoding: one guided MBR pass ("Action guidance" there); action dropout stays off
    assert (dyn.sampling.steps, dyn.sampling.pick, dyn.sampling.guidance) == (1, "mbr", 3.0)
    quality = _load("dynamics_coinrun.py").get_config("budget=quality").sampling
    assert (quality.steps, quality.pick, quality.guidance) == (1, "mbr", 1.5)  # trained longer
    assert dyn.loss.action_dropout == 0.0
    token = _load("dynamics_coinrun.py").get_config("action_mode=token")
    assert token.model.action_mode == "token"
    assert _load("dynamics.py").get_config("size=tiny").loss.next_frame_prob == 0.0
