"""genie_jax/action_effect.py: which model ignores the action. Each number is checked against a
world built to ignore, or to use, its actions."""
import jax
import numpy as np
import pytest

from genie_jax.action_effect import action_effects, code_vectors, distinct_codes
from genie_jax.evaluation import load_clips, open_heldout, select_clips
from genie_jax.sampling import WorldModel
from tests.stages.helpers import save_fake_run, save_fake_tok_lam, test_config as stage_config


def test_distinct_codes_merges_codes_that_point_the_same_way():
    a, b = np.eye(4)[0], np.eye(4)[1]
    codebook = np.stack([a, 3 * a, b, a + 0.01 * b, -a, b])  # scale does not matter (L2 norm)
    assert distinct_codes(codebook, np.ones(6, bool)) == 3       # {0,1,3}, {2,5}, {4}
    assert distinct_codes(codebook, np.array([1, 1, 0, 1, 0, 0], bool)) == 1
    assert distinct_codes(codebook, np.zeros(6, bool)) == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    tok, lam = save_fake_tok_lam(root)
    dyn = str(root / "dyn")
    save_fake_run(dyn, stage_config("dynamics", f"size=test,tokenizer={tok},lam={lam}"))
    wm = WorldModel.load(dyn)
    src = open_heldout(wm.config, "test")
    eps, starts, _ = select_clips(src.episode_lengths(), 3, 4, 0, 2)
    frames, _ = load_clips(src, eps, starts, 4)
    return wm, frames


def _with(wm, stage, path, fn):
    """A copy of wm whose params[stage][path...] is fn(value)."""
    params = jax.tree.map(lambda x: x, wm.params)
    node = params[stage]
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = fn(node[path[-1]])
    out = WorldModel.__new__(WorldModel)
    out.__dict__.update(wm.__dict__, params=params)
    return out


def test_a_world_that_ignores_actions_scores_zero(world):
    wm, frames = world
    deaf = _with(wm, "lam", ("from_action", "kernel"), np.zeros_like)
    deaf = _with(deaf, "dynamics", ("action_embed",),
                 lambda t: np.broadcast_to(t[:1], t.shape).copy())  # one embedding for all
    fx = action_effects(deaf, frames, window=4, batch=2)
    assert fx["windows"] == len(frames) and fx["window"] == 4
    assert fx["lam"]["code_effect"]["gain_db"] == pytest.approx(0.0, abs=1e-5)
    assert fx["dynamics"]["ce_gain"] == pytest.approx(0.0, abs=1e-6)
    assert fx["dynamics"]["accuracy_gain"] == pytest.approx(0.0, abs=1e-6)
    assert 1 <= fx["lam"]["distinct_codes"] <= fx["lam"]["codes_used"] <= 6


def test_a_world_that_hears_actions_scores_nonzero_and_is_seeded(world):
    wm, frames = world
    loud = _with(wm, "lam", ("from_action", "kernel"), lambda k: k * 50.0)
    loud = _with(loud, "dynamics", ("action_embed",), lambda t: t * 50.0)
    fx = action_effects(loud, frames, window=4, batch=2)
    assert abs(fx["lam"]["code_effect"]["gain_db"]) > 1e-3
    assert abs(fx["dynamics"]["ce_gain"]) > 1e-3
    ce = fx["dynamics"]["next_frame_ce"]
    assert fx["dynamics"]["ce_gain"] == pytest.approx(ce["random"] - ce["inferred"])
    assert action_effects(loud, frames, window=4, batch=2) == fx


def test_an_fsq_lam_has_code_vectors_too(tmp_path):
    """A LAM with model.quantizer='fsq' has no codebook: its codes' vectors are its grid."""
    root = tmp_path
    tok, lam, dyn = (str(root / n) for n in ("tok", "lam", "dyn"))
    save_fake_run(tok, stage_config("tokenizer"))
    lam_cfg = stage_config("lam")
    lam_cfg.model.quantizer, lam_cfg.model.fsq_levels, lam_cfg.model.code_dim = "fsq", (3, 2), 2
    save_fake_run(lam, lam_cfg)
    cfg = stage_config("dynamics", f"size=test,tokenizer={tok},lam={lam}")
    cfg.lam.model.quantizer, cfg.lam.model.fsq_levels, cfg.lam.model.code_dim = "fsq", (3, 2), 2
    save_fake_run(dyn, cfg)
    wm = WorldModel.load(dyn)
    vectors = np.asarray(code_vectors(wm.lam, wm.params["lam"]))
    assert vectors.shape == (6, 2) and len({tuple(v) for v in vectors}) == 6
    src = open_heldout(wm.config, "test")
    eps, starts, _ = select_clips(src.episode_lengths(), 2, 4, 0)
    frames, _ = load_clips(src, eps, starts, 4)
    fx = action_effects(wm, frames, window=4, batch=2)
    assert 1 <= fx["lam"]["distinct_codes"] <= fx["lam"]["codes_used"] <= 6
