"""`genie-jax eval` by the game's own controls: rollouts driven by the clips' true actions
(through the fitted action map, or directly for a run trained on them), the latent-action probe,
and the repeat-the-last-prompt-frame baseline; the dynamics stage conditioned on true actions."""
import numpy as np
import pytest

from genie_jax.action_map import ActionMap
from genie_jax.data.procedural import ACTION_NAMES
from genie_jax.evaluation import EvalSettings, evaluate, probe_accuracy
from tests.stages.helpers import save_fake_run, save_fake_tok_lam, test_config as _cfg

SETTINGS = dict(episodes=3, rollout_frames=5, batch_size=2, steps=2)


def test_probe_accuracy_hand_computed():
    # clips 0, 2 fit fold 1 and clips 1, 3 fit fold 0 (interleaved halves)
    latent = np.array([[0, 1], [0, 1], [0, 1], [0, 0]])
    control = np.array([[2, 3], [2, 3], [2, 2], [3, -1]])
    r = probe_accuracy(latent, control)
    # fold 0 scores clips 0, 2 with a decoder fitted on clips 1, 3: pairs (0,2) (1,3) (0,3)
    # -> latent 0: {2: 1, 3: 1} -> 2 (ties: the first), latent 1 -> 3; predictions 2,3,2,3 vs
    # truth 2,3,2,2: 3 hits; chance = the fit half's most common control, 3: 1 hit.
    # fold 1 scores clips 1, 3 (the -1 left out) fitted on clips 0, 2: latent 0 -> 2, latent 1:
    # {3: 1, 2: 1} -> 2; predictions 2,2,2 vs 2,3,3: 1 hit; chance (2): 1 hit.
    assert r["pairs"] == 7
    assert r["accuracy"] == pytest.approx(4 / 7)
    assert r["chance"] == pytest.approx(2 / 7)


def test_probe_accuracy_recovers_a_deterministic_map():
    rng = np.random.default_rng(0)
    control = rng.integers(0, 4, size=(10, 6))
    latent = (control + 1) % 4  # each latent means exactly one control
    r = probe_accuracy(latent, control)
    assert r["accuracy"] == 1.0 and r["chance"] < 0.5 and r["pairs"] == 60


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return (root, *save_fake_tok_lam(root))


def _repeat_psnr(results_settings, wm_frames_real, K):
    """PSNR of the last prompt frame against each later real frame (numpy, per clip)."""
    real = wm_frames_real.astype(np.float64) / 255
    still = real[:, K - 1:K]
    mse = np.mean((real[:, K:] - still) ** 2, axis=(2, 3, 4))
    return 10 * np.log10(1 / np.maximum(mse, 1e-10))


def test_eval_reports_true_action_rollouts_probe_and_repeat_baseline(runs):
    from genie_jax.evaluation import load_clips, open_heldout, select_clips
    root, tok, lam = runs
    dyn = str(root / "dyn")
    save_fake_run(dyn, _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}"))
    s = EvalSettings(**SETTINGS)
    r0, _ = evaluate(dyn, s, log=lambda m: None)
    assert r0["true_actions"] is None  # no fitted action map yet
    probe = r0["action_probe"]
    assert probe["pairs"] == 3 * 5 and 0 <= probe["accuracy"] <= 1 and 0 <= probe["chance"] <= 1
    fx = r0["action_effect"]  # its numbers: tests/test_action_effect.py
    assert fx["windows"] == 3 and 1 <= fx["lam"]["distinct_codes"] <= fx["lam"]["codes_used"]

    # a fitted map: the procedural world's 5 moves, two of them sharing latent 1, DOWN unmapped
    ActionMap(names=ACTION_NAMES[:4], latent=(0, 1, 1, 2), keys={}, source="fit",
              num_actions=6).save(dyn)
    r, art = evaluate(dyn, s, log=lambda m: None)
    t = r["true_actions"]
    assert t is not None and t["source"] == "action_map" and 1 <= t["clips"] <= 3
    assert len(t["psnr_per_step"]) == 5
    assert t["delta_psnr"] == pytest.approx(t["psnr_per_step"][3]
                                            - t["random_actions_psnr_per_step"][3], abs=1e-6)
    # the LAM-driven numbers do not change when the map appears
    assert r["rollout"]["psnr_per_step"] == pytest.approx(r0["rollout"]["psnr_per_step"])
    assert r["rollout"]["actions"] == "lam"
    # the inferred actions shuffled over clips and steps: a delta-PSNR of its own
    sh, c = r["rollout"]["shuffled_actions"], r["controllability"]
    assert len(sh["psnr_per_step"]) == 5 and sh["pooled_psnr"] <= sh["psnr"] + 1e-9
    assert c["delta_psnr_shuffled"] == pytest.approx(
        r["rollout"]["psnr_per_step"][3] - sh["psnr_per_step"][3], abs=1e-6)

    # repeat-last-frame baseline, recomputed from the same clips
    wm_cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}")
    src = open_heldout(wm_cfg, "test")
    eps, starts, _ = select_clips(src.episode_lengths(), 3, 6, 0)
    frames, actions = load_clips(src, eps, starts, 6)
    want = _repeat_psnr(r["settings"], frames, 1)
    assert r["repeat_last_frame"]["psnr_per_step"] == pytest.approx(
        list(want.mean(0)), rel=1e-4)
    rt = r["repeat_last_tokens"]  # its frames: tests/test_sampling.py (copy_step)
    assert len(rt["psnr_per_step"]) == 5 and np.isfinite(rt["psnr_per_step"]).all()
    assert rt["psnr"] == pytest.approx(np.mean(rt["psnr_per_step"]), rel=1e-6)
    rf = r["repeat_last_frame"]  # errors pooled over clips: the same clips' MSE, recomputed
    mse = 10.0 ** (-want / 10)
    assert rf["pooled_psnr_per_step"] == pytest.approx(list(-10 * np.log10(mse.mean(0))),
                                                       rel=1e-4)
    assert r["rollout"]["pooled_psnr"] <= r["rollout"]["psnr"] + 1e-9  # Jensen
    # the clips the map could drive: every rollout action's control has a latent (DOWN has none)
    drivable = np.all(actions[:, :5] != 4, axis=1)
    assert t["clips"] == int(drivable.sum())
    assert len(t["delta_psnr_shuffled_per_step"]) == 5 and np.isfinite(t["delta_psnr_shuffled"])
    # a map of all 5 moves drives every clip: the controls against the shuffled inferred actions
    # is then the difference of the two whole rollouts
    ActionMap(names=ACTION_NAMES[:5], latent=(0, 1, 1, 2, 3), keys={}, source="fit",
              num_actions=6).save(dyn)
    r2, _ = evaluate(dyn, s, log=lambda m: None)
    t2, sh2 = r2["true_actions"], r2["rollout"]["shuffled_actions"]
    assert t2["clips"] == 3
    assert t2["delta_psnr_shuffled"] == pytest.approx(
        t2["psnr_per_step"][3] - sh2["psnr_per_step"][3], abs=1e-6)


def test_true_action_dynamics_trains_and_evaluates(runs, tmp_path):
    from genie_jax.stages import get_stage
    root, tok, _ = runs
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam_mode=true_actions")
    assert cfg.lam.mode == "true_actions" and cfg.model.num_actions == 5
    stage = get_stage(cfg)
    assert set(stage.frozen_inputs()) == {"tokenizer"}
    assert set(stage.batch_spec(2)) == {"frames", "actions"}
    bad = {"frames": np.zeros((8, 4, 16, 16, 3), np.uint8), "actions": np.full((8, 4), 5, np.int32)}
    from genie_jax.errors import UserError
    with pytest.raises(UserError, match="model.num_actions=5"):
        stage.check_batch(bad, 8)

    dyn = str(tmp_path / "dyn_true")
    save_fake_run(dyn, cfg)
    r, _ = evaluate(dyn, EvalSettings(**SETTINGS), log=lambda m: None)
    assert r["rollout"]["actions"] == "true" and r["lam"] is None
    assert r["rollout"]["shuffled_actions"] is None  # no inferred actions to shuffle
    assert r["controllability"]["delta_psnr_shuffled"] is None
    assert r["action_nmi"] is None and r["action_probe"] is None
    assert r["action_effect"] is None  # no LAM
    t = r["true_actions"]
    assert t["source"] == "dataset" and t["clips"] == 3
    assert t["psnr_per_step"] == pytest.approx(r["rollout"]["psnr_per_step"])
    assert r["controllability"]["delta_psnr"] == pytest.approx(t["delta_psnr"])


@pytest.mark.slow
def test_true_action_dynamics_really_trains(runs, tmp_path):
    from genie_jax.train.trainer import train
    _, tok, _ = runs
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam_mode=true_actions")
    cfg.train.steps, cfg.train.eval_every, cfg.checkpoint.every = 4, 4, 4
    summary = train(cfg, str(tmp_path / "dyn"))
    assert summary["step"] == 4 and np.isfinite(summary["eval"]["ce"])
    assert summary["eval"]["action_usage"] > 0  # the recorded actions reached the model
    r, _ = evaluate(str(tmp_path / "dyn"), EvalSettings(**SETTINGS), log=lambda m: None)
    assert r["true_actions"]["source"] == "dataset" and r["checkpoint_step"] == 4
