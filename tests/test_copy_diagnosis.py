"""experiments/copy_diagnosis.py: the one-step diagnostics on a fake world."""
import numpy as np
import pytest

from experiments.copy_diagnosis import diagnose
from genie_jax.evaluation import load_clips, open_heldout, select_clips
from tests.stages.helpers import save_fake_run, save_fake_tok_lam, test_config as _cfg


def test_copy_diagnosis_has_a_pulse_and_its_pixel_copy_is_the_data_s(tmp_path):
    tok, lam = save_fake_tok_lam(tmp_path)
    dyn = str(tmp_path / "dyn")
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}")
    save_fake_run(dyn, cfg)
    out = diagnose(dyn, clip_frames=6, episodes=2)
    M = out["window"]
    assert out["frames"] == list(range(M - 1, 6))
    rows = out["per_frame"]
    assert all(len(v) == 6 - M + 1 for v in rows.values())
    m = out["mean"]
    assert m["token_copy_accuracy"] == pytest.approx(1 - m["tokens_changed"])
    assert 0 <= m["accuracy_on_changed"] <= 1 and 0 <= m["accuracy"] <= 1
    assert np.isfinite([m["tokenizer"], m["token_copy"], m["dynamics_argmax"],
                        m["dynamics_sampled"]]).all()
    # pixel copy, recomputed from the clips
    src = open_heldout(cfg, "test")
    eps, starts, _ = select_clips(src.episode_lengths(), 2, 6, 0, 3)
    x = load_clips(src, eps, starts, 6)[0].astype(np.float64) / 255
    mse = np.mean((x[:, M - 1:] - x[:, M - 2:-1]) ** 2, axis=(2, 3, 4))
    want = np.mean(10 * np.log10(1 / np.maximum(mse, 1e-10)), axis=0)
    np.testing.assert_allclose(rows["pixel_copy"], want, rtol=1e-4)
    assert out["pooled"]["pixel_copy"] == pytest.approx(
        -10 * np.log10(np.maximum(mse, 1e-10).mean()), rel=1e-4)
