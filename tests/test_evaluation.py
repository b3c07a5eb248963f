"""Evaluation metrics against hand-computed values, clip/window bookkeeping, media writers."""
import math
import os

import numpy as np
import pytest

from genie_jax import media
from genie_jax.errors import UserError
from genie_jax.data.games import coinrun_action_class
from genie_jax.evaluation import (action_nmi, episode_source_name, infer_actions_windowed,
                                  is_coinrun, rollout_rows, select_clips, window_starts)
from genie_jax.metrics import (codebook_usage, contingency_table, delta_psnr_per_step,
                               delta_psnr_stderr_per_step, mutual_information,
                               normalized_mutual_information, per_step_mean, value_at_step)
from genie_jax.sample_video import parse_actions


# ---- NMI -----------------------------------------------------------------------------------

def test_contingency_table_counts_and_drops_unknown():
    t, xs, ys = contingency_table([0, 0, 1, 2, 2, -1], [5, 5, 7, 7, -1, 5])
    np.testing.assert_array_equal(xs, [0, 1, 2])
    np.testing.assert_array_equal(ys, [5, 7])
    np.testing.assert_array_equal(t, [[2, 0], [0, 1], [0, 1]])  # (2,-1) and (-1,5) dropped


@pytest.mark.parametrize("table", [np.diag([5, 3, 2]), np.array([[0, 4], [6, 0]]),
                                   np.array([[0, 0, 3], [2, 0, 0], [0, 7, 0]])])
def test_nmi_is_one_when_perfectly_dependent(table):
    assert normalized_mutual_information(table) == pytest.approx(1.0)


@pytest.mark.parametrize("table", [np.full((2, 2), 3), np.outer([1, 2], [2, 4, 6]),
                                   np.outer([3, 1, 1], [1, 1])])
def test_nmi_is_zero_when_independent(table):
    assert mutual_information(table) == pytest.approx(0.0, abs=1e-12)
    assert normalized_mutual_information(table) == pytest.approx(0.0, abs=1e-12)


def test_nmi_hand_computed():
    # p = [[1/2, 0], [1/4, 1/4]]: rows (1/2, 1/2), columns (3/4, 1/4).
    t = np.array([[2, 0], [1, 1]])
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) \
        + 0.25 * math.log(0.25 / (0.5 * 0.25))
    hx = math.log(2)
    hy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert mutual_information(t) == pytest.approx(mi)
    assert normalized_mutual_information(t) == pytest.approx(mi / ((hx + hy) / 2))
    # Many latent codes -> fewer true actions, deterministically: I = H(true) < mean entropy.
    latent = np.array([0, 1, 2, 3] * 5)
    true = latent // 2
    t, _, _ = contingency_table(latent, true)
    assert normalized_mutual_information(t) == pytest.approx(math.log(2) / ((math.log(4) + math.log(2)) / 2))


def test_nmi_edge_cases():
    assert normalized_mutual_information(np.array([[4]])) == 1.0  # both constant: agree
    assert normalized_mutual_information(np.array([[2, 3]])) == 0.0  # one constant
    assert math.isnan(normalized_mutual_information(np.zeros((2, 2))))


# ---- CoinRun classes ---------------------------------------------------------------------

def test_coinrun_dataset_names():  # the class table itself: tests/data/test_games.py
    assert is_coinrun("procgen:coinrun") and is_coinrun("coinrun")
    assert not is_coinrun("procgen:bigfish") and not is_coinrun("procedural")


def test_coinrun_is_recognised_from_episode_metadata():
    class Shards:  # as genie_jax.data.shards.ArrayRecordEpisodes
        def metadata(self, e):
            return [{"source": "procgen:coinrun"}, {"source": "ale:pong"}, {"generator": "coinrun"}][e]

    names = [episode_source_name(Shards(), e) for e in range(3)]
    assert [is_coinrun(n) for n in names] == [True, False, True]
    from genie_jax.data.procedural import ProceduralVideo
    assert episode_source_name(ProceduralVideo(num_episodes=1, episode_length=4), 0) == "procedural"


def test_action_nmi_reports_raw_and_class_nmi_for_coinrun():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 15, size=(20, 9))
    true[0, 0] = -1  # unknown: left out
    latent = coinrun_action_class(true)  # a LAM that recovers exactly the 6 classes
    latent[0, 0] = 3
    r = action_nmi(latent, true, coinrun=True)
    assert r["pairs"] == 20 * 9 - 1
    assert r["class_nmi"] == pytest.approx(1.0)
    assert 0.3 < r["nmi"] < 1.0  # the 15 raw actions are not all told apart
    assert "class_nmi" not in action_nmi(latent, true, coinrun=False)


# ---- rollout metrics ---------------------------------------------------------------------

def test_delta_psnr_arithmetic_and_per_step_aggregation():
    inferred = np.array([[20.0, 22.0, 24.0, 26.0, 30.0], [18.0, 20.0, 22.0, 24.0, 28.0]])
    random = np.array([[20.0, 21.0, 21.0, 20.0, 25.0], [18.0, 19.0, 19.0, 19.0, 25.0]])
    assert per_step_mean(inferred) == [19.0, 21.0, 23.0, 25.0, 29.0]
    d = delta_psnr_per_step(inferred, random)
    assert d == pytest.approx([0.0, 1.0, 3.0, 5.5, 4.0])
    assert value_at_step(d, 4) == pytest.approx(5.5)  # t counts generated frames from 1
    assert value_at_step(d, 6) is None and value_at_step(d, 0) is None
    assert per_step_mean([[1.0, np.nan], [3.0, 4.0]]) == [2.0, 4.0]
    with pytest.raises(ValueError):
        delta_psnr_per_step(inferred, random[:, :3])


def test_delta_psnr_stderr_is_over_paired_clip_differences():
    inferred = np.array([[20.0, 22.0], [18.0, 20.0], [21.0, np.nan]])
    random = np.array([[19.0, 22.0], [18.0, 17.0], [18.0, 1.0]])
    se = delta_psnr_stderr_per_step(inferred, random)
    # step 1: differences 1, 0, 3 -> sd 1.5275 / sqrt(3); step 2: 0, 3 (NaN clip left out)
    assert se[0] == pytest.approx(np.std([1.0, 0.0, 3.0], ddof=1) / np.sqrt(3))
    assert se[1] == pytest.approx(np.std([0.0, 3.0], ddof=1) / np.sqrt(2))
    # a shift common to both action sets (an easy clip) adds nothing: the pairing removes it
    assert delta_psnr_stderr_per_step(inferred + np.array([[5.0], [0.0], [-3.0]]),
                                      random + np.array([[5.0], [0.0], [-3.0]])) == \
        pytest.approx(se)
    assert np.isnan(delta_psnr_stderr_per_step([[1.0]], [[0.0]])[0])
    with pytest.raises(ValueError):
        delta_psnr_stderr_per_step(inferred, random[:, :1])


def test_codebook_usage():
    assert codebook_usage([4, 0, 4, 0]) == {"num_codes": 4, "codes_used": 2, "usage": 0.5,
                                            "perplexity": pytest.approx(2.0)}
    assert codebook_usage([1, 1, 1, 1])["perplexity"] == pytest.approx(4.0)
    assert codebook_usage([8, 0, 0])["perplexity"] == pytest.approx(1.0)


# ---- clips and windows ---------------------------------------------------------------------

def test_select_clips_skips_short_episodes_and_is_seeded():
    eps, starts, short = select_clips([5, 20, 3, 20, 20], 2, 10, seed=0)
    assert eps == [1, 3] and short == 2
    assert all(0 <= s <= 10 for s in starts)
    assert select_clips([5, 20, 3, 20, 20], 2, 10, seed=0)[1] == starts
    assert select_clips([5, 5], 3, 10, seed=0)[0] == []


def test_select_clips_several_per_episode_never_overlap():
    eps, starts, _ = select_clips([35, 8, 100], 2, 10, seed=1, per_episode=4)
    # episode 0 holds 3 clips of 10 (segments of 11), episode 1 is too short, episode 2 gets 4
    assert eps == [0, 0, 0, 2, 2, 2, 2]
    for e in (0, 2):
        s = sorted(st for ep, st in zip(eps, starts) if ep == e)
        assert all(b - a >= 10 for a, b in zip(s, s[1:]))
        assert s[0] >= 0 and s[-1] + 10 <= (35 if e == 0 else 100)


@pytest.mark.parametrize("T,w", [(11, 4), (4, 4), (3, 4), (2, 2), (16, 8), (9, 3)])
def test_windows_cover_every_transition(T, w):
    starts = window_starts(T, w)
    w = min(w, T)
    assert starts[0] == 0 and starts[-1] + w == T
    covered = set()
    for s in starts:
        covered |= set(range(s, s + w - 1))
    assert covered == set(range(T - 1))


def test_infer_actions_windowed_stitches_windows():
    B, T = 2, 11
    frames = np.zeros((B, T, 2, 2, 1), np.uint8)
    frames[:, :, 0, 0, 0] = np.arange(T)  # each frame carries its index
    calls = []

    def infer(f):  # a fake LAM: the action of transition j is the index of frame j+1
        calls.append(f.shape)
        return np.asarray(f)[:, 1:, 0, 0, 0].astype(np.int64) * 10

    codes = infer_actions_windowed(infer, frames, 4)
    np.testing.assert_array_equal(codes, np.tile(np.arange(1, T) * 10, (B, 1)))
    assert set(calls) == {(B, 4, 2, 2, 1)}  # one shape: one compile


def test_parse_actions():
    assert parse_actions("0, 3,1", 6) == [0, 3, 1]
    with pytest.raises(UserError, match=r"\[6, 9\] outside \[0, 6\)"):
        parse_actions("0,6,9", 6)
    with pytest.raises(UserError, match="outside"):
        parse_actions("-1", 6)
    with pytest.raises(UserError, match="integers"):
        parse_actions("0,left", 6)


# ---- media ---------------------------------------------------------------------------------

def test_upscale_grid_and_rows():
    x = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(1, 2, 2, 3)
    up = media.upscale(x, 3)
    assert up.shape == (1, 6, 6, 3)
    np.testing.assert_array_equal(up[0, :3, :3], np.broadcast_to(x[0, 0, 0], (3, 3, 3)))
    g = media.grid(np.zeros((2, 3, 4, 5, 3), np.uint8), gap=1)
    assert g.shape == (2 * 4 + 1, 3 * 5 + 2, 3) and g[4, 0, 0] == 255 and g[0, 0, 0] == 0
    real = np.zeros((2, 6, 4, 4, 3), np.uint8)
    gen = np.ones((2, 4, 4, 4, 3), np.float32)
    rows = rollout_rows(real, gen, gen * 0.5, prompt_frames=2)
    assert rows.shape == (6, 6, 4, 4, 3) and rows.dtype == np.uint8
    assert rows[1, :2].max() == 0 and rows[1, 2:].min() == 255 and rows[2, 2:].max() == 128


def test_line_plot_draws_both_series():
    img = media.line_plot({"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, np.nan]}, title="t")
    assert img.shape == (420, 640, 3) and img.dtype == np.uint8
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert (31, 119, 180) in colours and (214, 39, 40) in colours


def test_video_writers_are_atomic_and_readable(tmp_path):
    import imageio.v3 as iio
    frames = np.zeros((5, 16, 16, 3), np.uint8)
    frames[:, 4:8, 4:8] = 255
    frames[np.arange(5), 0, 0] = np.arange(5)[:, None] * 40
    g = media.write_video(str(tmp_path / "a.gif"), frames, fps=5)
    back = iio.imread(g, index=None)
    assert back.shape[:3] == (5, 16, 16)
    m = media.write_video(str(tmp_path / "b.mp4"), media.upscale(frames, 2), fps=5)
    assert os.path.getsize(m) > 0
    assert sorted(os.listdir(tmp_path)) == ["a.gif", "b.mp4"]  # no temporaries left
    with pytest.raises(ValueError, match="gif or .mp4"):
        media.write_video(str(tmp_path / "c.avi"), frames)


def test_eval_refuses_the_train_split_before_loading_anything(tmp_path):
    from genie_jax.evaluation import EvalSettings, evaluate
    with pytest.raises(UserError, match="held-out"):
        evaluate(str(tmp_path / "no_run"), EvalSettings(split="train"))
    with pytest.raises(UserError, match="rollout_frames"):
        evaluate(str(tmp_path / "no_run"), EvalSettings(rollout_frames=0))
