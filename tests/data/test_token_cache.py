"""The dynamics token cache (genie_jax/data/token_cache.py): `genie-jax data tokenize` has a pulse
and resumes; cached batches are the frames loader's batches encoded (same windows, same tokens,
same loss); a dynamics run trains on the cache, logs the losses of the same run on frames, and
resumes; a stale or mismatched cache is a one-line error naming the key and the file."""
import json
import os

import jax
import numpy as np
import pytest

from genie_jax.data.loader import make_iterator
from genie_jax.data.token_cache import META_FILE, TokenCache, write_cache
from genie_jax.errors import UserError
from genie_jax.stages import get_stage
from genie_jax.stages.base import load_frozen
from genie_jax.train.trainer import loader_options, train
from tests.conftest import REPO, run_cli
from tests.stages.helpers import save_fake_run, save_fake_tok_lam, test_config as _cfg

DYN_CFG = os.path.join(REPO, "experiments", "configs", "dynamics.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Fake finished tokenizer and LAM runs and a cache of the test-size dynamics windows."""
    root = tmp_path_factory.mktemp("tokcache")
    tok, lam = save_fake_tok_lam(root)
    cache = str(root / "cache")
    summary = write_cache(_dyn(tok, lam), cache, progress=False)
    assert summary["published"] and summary["steps"] == {"tokenizer": 5, "lam": 5}
    return dict(root=root, tok=tok, lam=lam, cache=cache)


def _dyn(tok, lam, cache="", knobs=""):
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}{knobs}")
    cfg.data.token_cache = cache
    return cfg


def _first_batch(stage, cfg):
    return next(make_iterator(stage.train_source(), loader_options(cfg, seed=cfg.data.seed)))


def test_cached_batch_is_the_frames_batch_encoded_with_the_same_loss(runs):
    frames_cfg = _dyn(runs["tok"], runs["lam"])
    cached_cfg = _dyn(runs["tok"], runs["lam"], runs["cache"])
    frames_stage, cached_stage = get_stage(frames_cfg), get_stage(cached_cfg)
    inputs = frames_stage.frozen_inputs()
    frozen = load_frozen(inputs, {k: fi.abstract() for k, fi in inputs.items()})
    fb, cb = _first_batch(frames_stage, frames_cfg), _first_batch(cached_stage, cached_cfg)
    assert set(cb) == {"tokens", "actions", "latent_actions"} and cb["tokens"].dtype == np.uint16
    np.testing.assert_array_equal(cb["actions"], fb["actions"])  # the same windows
    cached_stage.check_batch({k: cb[k] for k in ("tokens", "latent_actions")}, 8)

    from genie_jax.stages.dynamics import encode_tokens, lam_actions
    tokens = jax.jit(lambda p, f: encode_tokens(frames_stage.tokenizer, p, f))(
        frozen["tokenizer"], fb["frames"])
    acts = jax.jit(lambda p, f: lam_actions(frames_stage.lam, p, f))(frozen["lam"], fb["frames"])
    np.testing.assert_array_equal(cb["tokens"], np.asarray(tokens))
    np.testing.assert_array_equal(cb["latent_actions"], np.asarray(acts))

    rng = jax.random.PRNGKey(3)
    params = jax.jit(frames_stage.init)(jax.random.PRNGKey(0), {"frames": fb["frames"]})["params"]
    loss_frames = jax.jit(lambda b: frames_stage.loss(params, frozen, {}, b, rng)[0])(
        {"frames": fb["frames"]})
    loss_cached = jax.jit(lambda b: cached_stage.loss(params, {}, {}, b, rng)[0])(
        {"tokens": cb["tokens"], "latent_actions": cb["latent_actions"]})
    np.testing.assert_allclose(float(loss_cached), float(loss_frames), rtol=1e-6)


def test_true_actions_train_on_the_cached_recorded_actions(runs):
    cfg = _dyn(runs["tok"], runs["lam"], runs["cache"], ",lam_mode=true_actions")
    stage = get_stage(cfg)
    b = _first_batch(stage, cfg)
    assert set(stage.batch_spec(8)) == {"tokens", "actions"} and b["actions"].shape == (8, 4)
    assert set(stage.eval_batch_spec(8)) == {"frames", "actions"}
    stage.check_batch({k: b[k] for k in ("tokens", "actions")}, 8)


def _fast(cfg, steps=4):
    cfg.train.update(steps=steps, log_every=2, eval_every=4)
    cfg.checkpoint.update(every=2, async_save=False)
    return cfg


def _train_losses(wd):
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


def test_dynamics_trains_on_the_cache_as_on_frames_and_resumes(runs, tmp_path):
    frames_wd, cached_wd = str(tmp_path / "frames"), str(tmp_path / "cached")
    train(_fast(_dyn(runs["tok"], runs["lam"])), frames_wd)
    summary = train(_fast(_dyn(runs["tok"], runs["lam"], runs["cache"])), cached_wd)
    assert summary["step"] == 4 and set(summary["eval"]) >= {"ce", "masked_acc", "action_usage"}
    assert os.path.exists(os.path.join(cached_wd, "dynamics_last_frame.png"))  # eval: frames
    np.testing.assert_allclose(_train_losses(cached_wd), _train_losses(frames_wd), rtol=1e-5)
    again = train(_fast(_dyn(runs["tok"], runs["lam"], runs["cache"]), steps=6), cached_wd)
    assert again["step"] == 6 and len(_train_losses(cached_wd)) == 3
    from genie_jax.sampling import WorldModel  # the run samples like any other (frames in/out)
    assert WorldModel.load(cached_wd).config.data.token_cache == runs["cache"]


def test_stale_or_mismatched_cache_is_a_clear_error(runs, tmp_path):
    tok, lam, cache = runs["tok"], runs["lam"], runs["cache"]
    cfg = _dyn(tok, lam, cache)
    cfg.data.num_frames = 3
    with pytest.raises(UserError, match=r"data.token_cache.*num_frames"):
        get_stage(cfg).train_source()
    cfg = _dyn(tok, lam, cache)
    cfg.data.seed = 7  # another procedural dataset
    with pytest.raises(UserError, match=rf"data.token_cache: {cache}/{META_FILE} .*dataset.seed"):
        get_stage(cfg).train_source()
    with pytest.raises(UserError, match="lam.mode=cotrain"):
        get_stage(_dyn(tok, lam, cache, ",lam_mode=cotrain"))
    with pytest.raises(UserError, match="not a finished token cache"):
        get_stage(_dyn(tok, lam, str(tmp_path))).train_source()
    # The tokenizer trained on: its newest step is no longer the one the cache was made with.
    newer = str(tmp_path / "tok")
    save_fake_run(newer, _cfg("tokenizer"), step=5)
    made = write_cache(_dyn(newer, lam), str(tmp_path / "c2"), progress=False)
    save_fake_run(newer, _cfg("tokenizer"), step=9)
    cfg = _dyn(newer, lam, str(tmp_path / "c2"))
    with pytest.raises(UserError, match="tokenizer step 5, but tokenizer.workdir now restores "
                                        "step 9: the cache is stale"):
        train(_fast(cfg), str(tmp_path / "dyn"))
    assert made["published"]
    # Encoding into a folder planned for other runs is refused, not overwritten.
    with pytest.raises(UserError, match="holds a token cache made with tokenizer.step=5"):
        write_cache(cfg, str(tmp_path / "c2"), progress=False)


def test_shards_publish_when_every_unit_is_written(runs, tmp_path):
    cfg, out = _dyn(runs["tok"], runs["lam"]), str(tmp_path / "sharded")
    kw = dict(unit_windows=64, progress=False)  # 208 windows: 4 units
    first = write_cache(cfg, out, shard=0, num_shards=2, **kw)
    assert (first["units"], first["units_written"], first["published"]) == (4, 2, False)
    with pytest.raises(UserError, match="run the other shards"):
        TokenCache(out)
    second = write_cache(cfg, out, shard=1, num_shards=2, **kw)
    assert second["published"] and second["units_written"] == 2
    whole, sharded = TokenCache(runs["cache"]), TokenCache(out)
    assert len(whole) == len(sharded) == 208
    for w in (0, 63, 64, 150, 207):
        for k, v in whole[w].items():
            np.testing.assert_array_equal(sharded[w][k], v)


def test_tokenize_command_has_a_pulse_and_resumes(runs, tmp_path):
    out = str(tmp_path / "cli")
    args = ["data", "tokenize", f"--config={DYN_CFG}:size=test,tokenizer={runs['tok']},"
            f"lam={runs['lam']}", f"--out={out}", "--noprogress"]
    proc = run_cli(args)
    assert "208 windows encoded" in proc.stdout and "published" in proc.stdout
    assert TokenCache(out).meta["tokenizer"]["step"] == 5
    again = run_cli(args)
    assert "0 windows encoded" in again.stdout
    bad = run_cli(args[:2] + [f"--config={DYN_CFG}:size=test,tokenizer={runs['tok']},"
                              f"lam={runs['lam']},lam_mode=cotrain", f"--out={tmp_path}/x"],
                  check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "cotrain" in bad.stderr


@pytest.mark.slow
def test_concurrent_shard_processes_fill_one_cache(runs, tmp_path):
    """Two `--shard` processes started together (one plan, disjoint units); the last publishes."""
    import subprocess
    import sys
    out = str(tmp_path / "mp")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "genie_jax", "data", "tokenize",
         f"--config={DYN_CFG}:size=test,tokenizer={runs['tok']},lam={runs['lam']}",
         f"--out={out}", "--unit_windows=64", "--noprogress", f"--shard={i}/2"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    assert "tokenize 0/2: 128 windows" in outs[0][0] and "tokenize 1/2: 80 windows" in outs[1][0]
    assert sum("published" in o for o, _ in outs) >= 1
    whole, mp = TokenCache(runs["cache"]), TokenCache(out)
    for w in range(0, 208, 13):
        for k, v in whole[w].items():
            np.testing.assert_array_equal(mp[w][k], v)
