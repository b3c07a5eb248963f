"""LAM and dynamics stages in-process: the loss runs and decreases on a tiny fixed batch, and
each trains through the engine ("has a pulse"; the dynamics run then samples)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from genie_jax.errors import UserError
from genie_jax.stages import get_stage
from genie_jax.stages.base import load_frozen
from tests.stages.helpers import frames_batch, save_fake_run, test_config as _cfg


def _load_frozen(stage):
    inputs = stage.frozen_inputs()
    return load_frozen(inputs, {k: fi.abstract() for k, fi in inputs.items()})


def _train(stage, batch, steps=6, lr=3e-3, frozen=None):
    v = dict(nn.unbox(jax.jit(stage.init)(jax.random.PRNGKey(0), batch)))
    params = v.pop("params")
    model_state = v
    tx = optax.adam(lr)
    opt = jax.jit(tx.init)(params)

    @jax.jit
    def step(params, model_state, opt, i):
        (loss, (metrics, ms)), g = jax.value_and_grad(stage.loss, has_aux=True)(
            params, frozen or {}, model_state, batch, jax.random.fold_in(jax.random.PRNGKey(1), 0))
        upd, opt = tx.update(g, opt, params)
        params, ms, extra = stage.after_update(optax.apply_updates(params, upd), ms)
        return params, ms, opt, loss, {**metrics, **extra}

    losses = []
    for i in range(steps):
        params, model_state, opt, loss, metrics = step(params, model_state, opt, i)
        losses.append(float(loss))
    return losses, metrics, params, model_state


def test_lam_stage_loss_decreases_and_reports_usage():
    cfg = _cfg("lam")
    stage = get_stage(cfg)
    batch = {"frames": jnp.asarray(frames_batch(2, 4, 16))}
    losses, metrics, params, model_state = _train(stage, batch)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert {"lam_mse", "psnr", "lam_perplexity", "lam_batch_code_usage",
            "codes_restarted"} <= set(metrics)
    ev = jax.jit(stage.eval_step)(params, {}, model_state, batch)
    assert ev["action_counts"].shape == (6,) and float(ev["action_counts"].sum()) == 2 * 3


@pytest.mark.parametrize("lam_mode", ["frozen", "cotrain"])
def test_dynamics_stage_loss_decreases_on_frozen_tokenizer(tmp_path, lam_mode):
    tok_dir, lam_dir = str(tmp_path / "tok"), str(tmp_path / "lam")
    tok_params = save_fake_run(tok_dir, _cfg("tokenizer"))
    if lam_mode == "frozen":
        save_fake_run(lam_dir, _cfg("lam"))
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok_dir},lam={lam_dir},lam_mode={lam_mode}")
    stage = get_stage(cfg)
    frozen = _load_frozen(stage)
    assert set(frozen) == ({"tokenizer", "lam"} if lam_mode == "frozen" else {"tokenizer"})
    for a, b in zip(jax.tree.leaves(frozen["tokenizer"]), jax.tree.leaves(tok_params)):
        np.testing.assert_array_equal(a, b)
    batch = {"frames": jnp.asarray(frames_batch(2, 4, 16))}
    losses, metrics, params, model_state = _train(stage, batch, steps=6, lr=1e-2, frozen=frozen)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert {"ce", "masked_acc", "mask_frac"} <= set(metrics)
    # Trainable params hold the dynamics (and the LAM only when co-trained); never the tokenizer.
    assert set(params) == ({"dynamics"} if lam_mode == "frozen" else {"dynamics", "lam"})
    if lam_mode == "cotrain":
        assert "lam_mse" in metrics and "lam_codes_restarted" in metrics
        assert "lam" in model_state["vq_stats"]
    ev = jax.jit(stage.eval_step)(params, frozen, model_state, batch)
    assert float(ev["count"]) == 2 and 0 <= float(ev["masked_acc"]) <= 2
    img = jax.jit(stage.visualize)(params, frozen, model_state, batch)["dynamics_last_frame"]
    assert img.dtype == jnp.uint8 and img.shape == (2 * 3 * 16, 4 * 16, 3)


def test_dynamics_stage_refuses_mismatched_tokenizer_checkpoint(tmp_path):
    tok_dir = str(tmp_path / "tok")
    tok = _cfg("tokenizer")
    tok.model.width = 48
    save_fake_run(tok_dir, tok)
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok_dir},lam_mode=cotrain")
    with pytest.raises(UserError, match="model.width"):
        _load_frozen(get_stage(cfg))


def test_dynamics_config_consistency_is_checked():
    cfg = _cfg("dynamics")
    cfg.model.num_codes = 7
    with pytest.raises(UserError, match="tokenizer.model.num_codes"):
        get_stage(cfg)


def test_action_mode_ablations_differ_only_in_action_mode():
    base = _cfg("dynamics", "size=tiny").to_dict()
    for mode in ("add", "token"):
        c = _cfg("dynamics", f"size=tiny,action_mode={mode}").to_dict()
        assert c["model"].pop("action_mode") == mode
        base_model = dict(base["model"])
        base_model.pop("action_mode")
        assert c["model"] == base_model
        assert {k: v for k, v in c.items() if k != "model"} == \
            {k: v for k, v in base.items() if k != "model"}


def _fast(cfg):
    cfg.train.update(steps=4, log_every=2, eval_every=4)
    cfg.checkpoint.update(every=2, async_save=False)
    return cfg


def test_lam_has_a_pulse(tmp_path):
    from genie_jax.train.trainer import train
    wd = str(tmp_path / "lam")
    summary = train(_fast(_cfg("lam")), wd)
    assert summary["step"] == 4
    assert set(summary["eval"]) >= {"psnr", "action_usage", "action_perplexity"}
    assert os.path.exists(os.path.join(wd, "next_frame_predictions.png"))


def test_dynamics_has_a_pulse_and_samples(tmp_path):
    from genie_jax.sampling import WorldModel, rollout
    from genie_jax.train.trainer import train
    tok, lam, wd = str(tmp_path / "tok"), str(tmp_path / "lam"), str(tmp_path / "dyn")
    save_fake_run(tok, _cfg("tokenizer"))
    save_fake_run(lam, _cfg("lam"))
    summary = train(_fast(_cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}")), wd)
    assert summary["step"] == 4
    assert set(summary["eval"]) >= {"ce", "masked_acc", "action_usage"}
    recs = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert all(np.isfinite(r["loss"]) for r in recs if r["split"] == "train")
    assert os.path.exists(os.path.join(wd, "dynamics_last_frame.png"))
    wm = WorldModel.load(wd)
    frames = rollout(wm, frames_batch(1, 2, 16), np.array([[0, 1, 2]]))
    assert frames.shape == (1, 3, 16, 16, 3) and wm.trace_count == 1


def _fsq(model):
    model.quantizer, model.fsq_levels, model.code_dim, model.num_codes = "fsq", (4, 3, 3), 3, 36


def test_dynamics_trains_on_a_frozen_fsq_tokenizer(tmp_path):
    tok_dir = str(tmp_path / "tok")
    tok = _cfg("tokenizer")
    _fsq(tok.model)
    save_fake_run(tok_dir, tok)
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok_dir},lam_mode=cotrain")
    _fsq(cfg.tokenizer.model)
    assert cfg.model.num_codes == 36  # the dynamics vocabulary follows the FSQ code count
    stage = get_stage(cfg)
    frozen = _load_frozen(stage)
    batch = {"frames": jnp.asarray(frames_batch(2, 4, 16))}
    losses, _, params, model_state = _train(stage, batch, steps=6, lr=1e-2, frozen=frozen)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    ev = jax.jit(stage.eval_step)(params, frozen, model_state, batch)
    assert float(ev["count"]) == 2


# ---- the token-input LAM (Genie's LAM-input ablation) -----------------------------------------

def test_token_lam_reads_its_frozen_tokenizer_and_trains(tmp_path):
    from genie_jax.train.trainer import train
    tok_dir = str(tmp_path / "tok")
    save_fake_run(tok_dir, _cfg("tokenizer"))
    cfg = _cfg("lam", f"size=test,input=tokens,tokenizer={tok_dir}")
    assert (cfg.model.token_codes, cfg.model.token_patch) == (64, 4)  # the tokenizer's
    stage = get_stage(cfg)
    frozen = _load_frozen(stage)
    assert set(frozen) == {"tokenizer"}
    batch = {"frames": jnp.asarray(frames_batch(2, 4, 16))}
    losses, metrics, params, model_state = _train(stage, batch, frozen=frozen)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert "token_embed" in params and "lam_mse" in metrics
    # the encoder reads the tokens: other tokens, other latents; none at all is an error
    from genie_jax.stages.video_vq import encode_tokens
    tokens = encode_tokens(stage.tokenizer, frozen["tokenizer"], batch["frames"])
    lat = [stage.model.apply({"params": params}, batch["frames"], tokens_BTN=t,
                             method=stage.model.latents) for t in (tokens, (tokens + 1) % 64)]
    assert not np.allclose(lat[0], lat[1])
    with pytest.raises(ValueError, match="reads the tokenizer's tokens"):
        stage.model.apply({"params": params}, batch["frames"], method=stage.model.latents)
    with pytest.raises(ValueError, match=r"tokens must be \[2, 4, 16\]"):
        stage.model.apply({"params": params}, batch["frames"], tokens_BTN=tokens[:, :, :8],
                          method=stage.model.latents)
    summary = train(_fast(cfg), str(tmp_path / "lam"))  # through the engine
    assert summary["step"] == 4 and "psnr" in summary["eval"]


def test_token_lam_config_must_match_its_tokenizer(tmp_path):
    cfg = _cfg("lam", "size=test,input=tokens")
    cfg.model.token_patch = 2
    with pytest.raises(UserError, match="model.token_patch=2 but tokenizer.model.patch_size=4"):
        get_stage(cfg)
    dyn = _cfg("dynamics", "size=test,lam_input=tokens")
    dyn.lam.model.token_codes = 32
    with pytest.raises(UserError, match="lam.model.token_codes=32"):
        get_stage(dyn)
    # a pixel LAM's config (and so its checkpoint meta) carries no tokenizer values
    assert (_cfg("lam").model.token_codes, _cfg("dynamics").lam.model.token_patch) == (0, 0)


@pytest.mark.parametrize("lam_mode", ["frozen", "cotrain"])
def test_dynamics_on_a_token_lam_trains_and_samples(tmp_path, lam_mode):
    from genie_jax.sampling import WorldModel, rollout
    from genie_jax.train.trainer import train
    tok, lam, wd = str(tmp_path / "tok"), str(tmp_path / "lam"), str(tmp_path / "dyn")
    save_fake_run(tok, _cfg("tokenizer"))
    if lam_mode == "frozen":
        save_fake_run(lam, _cfg("lam", f"size=test,input=tokens,tokenizer={tok}"))
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam},lam_mode={lam_mode},"
                           "lam_input=tokens")
    summary = train(_fast(cfg), wd)
    assert summary["step"] == 4 and np.isfinite(summary["eval"]["ce"])
    wm = WorldModel.load(wd)
    clip = frames_batch(1, 4, 16)
    codes = np.asarray(wm.infer_actions(clip))
    assert codes.shape == (1, 3) and codes.min() >= 0 and codes.max() < 6
    frames = rollout(wm, clip[:, :2], codes[:, 1:], prompt_actions=codes[:, :1])
    assert frames.shape == (1, 2, 16, 16, 3)


def test_action_dropout_teaches_no_action_and_is_off_by_default():
    """loss.action_dropout=1 replaces every action by "no action": the loss no longer depends on
    the actions; at 0 (the configs' default) it does."""
    cfg = _cfg("dynamics", "size=test,lam_mode=cotrain")
    assert cfg.loss.action_dropout == 0.0
    stage = get_stage(cfg)
    batch = {"frames": jnp.asarray(frames_batch(2, 4, 16))}
    params = nn.unbox(jax.jit(stage.init)(jax.random.PRNGKey(0), batch))["params"]
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 4, stage.model.tokens_per_frame), 0,
                                stage.model.num_codes)
    acts_a, acts_b = jnp.array([[0, 1, 2], [3, 4, 5]]), jnp.array([[5, 4, 3], [2, 1, 0]])

    def ce(p_drop, actions):
        cfg.loss.action_dropout = p_drop
        return float(get_stage(cfg)._masked_ce(params, tokens, actions, jax.random.PRNGKey(2),
                                               train=True)[0])
    assert ce(0.0, acts_a) != ce(0.0, acts_b)
    assert ce(1.0, acts_a) == ce(1.0, acts_b) == ce(0.0, jnp.full((2, 3), -1))
