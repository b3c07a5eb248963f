"""The CoinRun action-identifiability bound: labels from the probe's outcomes, and the script on
real procgen episodes (slow: it needs the procgen venv)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from genie_jax.action_bound import bound_report, concat_labels, transition_labels
from tests.conftest import REPO, run_cli

A = 15


def _row(groups: dict[int, int]) -> list[int]:
    """Outcome ids per action: every action shows NOOP's frame (group 0) unless listed."""
    return [groups.get(a, 0) for a in range(A)]


def test_labels_say_what_the_frames_can_show():
    # t0: nothing differs; t1: LEFT (1) moves, the taken action; t2: UP (5) taken but looks like
    # NOOP while RIGHT (7) and RIGHT+DOWN (6) move alike; t3: NOOP taken, LEFT+UP (2) would jump
    outcomes = np.array([[0] * A, _row({1: 1, 0: 1}), _row({7: 7, 6: 7}), _row({2: 2})])
    actions = np.array([4, 1, 5, 4])
    lab = transition_labels(outcomes, actions)
    assert lab["changes_nothing"].tolist() == [True, False, False, False]
    assert lab["like_noop"].tolist() == [True, False, True, True]
    assert lab["class"].tolist() == [2, 0, 3, 2]
    # t1: LEFT and LEFT+DOWN are one class (LEFT): identifiable; t0, t2, t3: several classes
    assert lab["identifiable"].tolist() == [False, True, False, False]
    assert lab["consistent"][1] == 1 << 0
    assert lab["consistent"][3] == sum(1 << c for c in (0, 2, 3, 4, 5))  # all but LEFT+UP

    rep = bound_report(concat_labels([lab, lab]), codes=np.array([0, 1, 0, 0] * 2))
    assert rep["transitions"] == 8 and rep["share_changes_nothing"] == 0.25
    assert rep["share_like_noop"] == 0.75 and rep["share_identifiable"] == 0.25
    assert rep["class_counts"]["NOOP"] == 4 and rep["share_like_noop_per_class"]["LEFT"] == 0.0
    assert 0 < rep["ceiling_class_nmi"] <= 1
    lam = rep["lam"]
    assert lam["transitions_acted"] == 2 and lam["transitions_identifiable"] == 2
    assert lam["share_like_noop_per_code"] == {0: 1.0, 1: 0.0}
    # code 1 is exactly the LEFT transitions: NMI 1 where only LEFT acts
    assert lam["class_nmi_acted"] == 1.0
    with pytest.raises(ValueError, match="codes for 8 transitions"):
        bound_report(concat_labels([lab, lab]), codes=np.zeros(3))
    with pytest.raises(ValueError, match="disagree"):
        transition_labels(outcomes, actions[:2])


@pytest.mark.slow
def test_script_records_episodes_again_and_reports(tmp_path):
    data = tmp_path / "data"
    run_cli(["data", "coinrun", f"--out={data}", "--episodes=2", "--length=24",
             "--split=0.5,0.25,0.25", "--workers=1"], timeout=600)
    out = tmp_path / "bound.json"
    script = os.path.join(REPO, "experiments", "coinrun_action_bound.py")
    p = subprocess.run([sys.executable, script, f"--data={data}", "--split=train",
                        f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["episodes"] == 1 and rep["transitions"] == 23 and "lam" not in rep
    assert 0 <= rep["share_like_noop"] <= 1 and rep["ceiling_class_nmi"] is not None
    bad = subprocess.run([sys.executable, script, f"--data={tmp_path / 'nope'}"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope" in bad.stderr.strip().splitlines()[-1]


def test_lam_inference_reads_a_lam_run_or_a_dynamics_runs_lam(tmp_path):
    """The script scores a LAM run on its own (no dynamics needed) or the LAM a dynamics run
    uses; both give that LAM's codes."""
    import jax
    from genie_jax.errors import UserError
    from genie_jax.evaluation import load_lam_inference
    from genie_jax.stages.lam import build_lam
    from genie_jax.stages.dynamics import lam_actions
    from tests.stages.helpers import frames_batch, save_fake_pipeline, save_fake_run, test_config

    dyn = save_fake_pipeline(tmp_path)
    lam_dir = str(tmp_path / "lam")
    cfg = test_config("lam")
    frames = frames_batch(2, 4, cfg.model.image_size[0])
    infer, window = load_lam_inference(lam_dir)
    codes = np.asarray(infer(frames))
    assert window == 4 and codes.shape == (2, 3)
    params = save_fake_run(str(tmp_path / "lam2"), cfg)  # the same init: the same params
    want = np.asarray(jax.jit(lambda f: lam_actions(build_lam(cfg.model), params, f))(frames))
    np.testing.assert_array_equal(codes, want)
    via_dyn, _ = load_lam_inference(dyn)
    np.testing.assert_array_equal(np.asarray(via_dyn(frames)), want)
    with pytest.raises(UserError, match="does not exist"):
        load_lam_inference(str(tmp_path / "nope"))
