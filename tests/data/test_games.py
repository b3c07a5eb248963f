import os

import numpy as np
import pytest

from genie_jax.data import games, shards
from genie_jax.data.cli import main as data_main


def _check_game_dataset(out, n_episodes, length, n_actions):
    src = shards.open_source(out, "train")
    assert len(src) == n_episodes and src.has_actions
    seeds = [src.metadata(e)["seed"] for e in range(len(src))]
    assert len(set(seeds)) == n_episodes  # a distinct recorded seed per episode
    for e in range(len(src)):
        m = src.metadata(e)
        assert 2 <= m["num_frames"] <= length
        assert m["terminated"] or m["num_frames"] == length
        d = src.read_episode(e)
        assert d["frames"].shape == (m["num_frames"], 64, 64, 3)
        assert d["actions"].min() >= 0 and d["actions"].max() < n_actions
        assert d["frames"].std() > 0
    return src


def test_atari_pong_with_true_actions_and_resume(tmp_path, capsys):
    pytest.importorskip("ale_py")
    out = str(tmp_path / "pong")
    args = ["atari", "--game=pong", f"--out={out}", "--episodes=3", "--length=24", "--block=2",
            "--split=1,0,0", "--workers=1", "--no-progress"]
    assert data_main(args) == 0
    src = _check_game_dataset(out, 3, 24, 6)
    assert src.metadata(0)["action_names"][0] == "NOOP"
    # Same seed -> same episode (regenerated in a fresh directory).
    out2 = str(tmp_path / "pong2")
    assert data_main([a if not a.startswith("--out=") else f"--out={out2}" for a in args]) == 0
    src2 = shards.open_source(out2, "train")
    by_seed = {src2.metadata(e)["seed"]: e for e in range(len(src2))}
    for e in range(len(src)):
        a, b = src.read_episode(e), src2.read_episode(by_seed[src.metadata(e)["seed"]])
        np.testing.assert_array_equal(a["frames"], b["frames"])
        np.testing.assert_array_equal(a["actions"], b["actions"])
    capsys.readouterr()
    assert data_main(args) == 0
    assert "0 blocks generated, 2 already done" in capsys.readouterr().out
    # Fewer episodes: the dataset shrinks to them; more again: only the changed block is redone.
    assert data_main([a if a != "--episodes=3" else "--episodes=2" for a in args]) == 0
    assert len(shards.open_source(out, "train")) == 2
    capsys.readouterr()
    assert data_main(args) == 0
    assert "1 blocks generated, 1 already done" in capsys.readouterr().out
    src3 = shards.open_source(out, "train")
    assert sorted(src3.metadata(e)["seed"] for e in range(len(src3))) == [0, 1, 2]


def test_unknown_atari_game_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("ale_py")
    assert data_main(["atari", "--game=notagame", f"--out={tmp_path}", "--episodes=1",
                      "--no-progress"]) == 2
    assert "unknown Atari game 'notagame'" in capsys.readouterr().err


def test_coinrun_action_classes():
    c = games.COINRUN_ACTION_CLASSES
    assert len(c) == 15 and len(set(c.tolist())) == 6
    assert (c == 2).sum() == 8  # 8/15 actions are no-ops
    names = [games.COINRUN_CLASS_NAMES[k] for k in games.coinrun_action_class(np.arange(15))]
    assert names[:3] == ["LEFT", "LEFT", "LEFT+UP"] and names[5:9] == ["UP", "RIGHT", "RIGHT",
                                                                       "RIGHT+UP"]
    assert [i for i, n in enumerate(names) if n == "NOOP"] == [3, 4, 9, 10, 11, 12, 13, 14]
    # Any shape; unknown actions (-1 in the datasets, or out of range) map to -1.
    out = games.coinrun_action_class([[-1, 15], [8, 3]])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[-1, -1], [5, 2]])


@pytest.mark.slow
def test_coinrun_in_isolated_venv(tmp_path):
    """Creates (or reuses) the cached procgen venv, then records 2 short CoinRun episodes."""
    out = str(tmp_path / "coinrun")
    assert data_main(["coinrun", f"--out={out}", "--episodes=2", "--length=40", "--block=1",
                      "--split=1,0,0", "--workers=2", "--no-progress"]) == 0
    assert os.path.exists(os.path.join(games.procgen_venv_dir(), ".genie_jax_ready"))
    src = _check_game_dataset(out, 2, 40, 15)
    assert src.metadata(0)["source"] == "procgen:coinrun"


def test_coinrun_frameskip_option_is_checked_and_old_datasets_stay_valid(tmp_path, capsys):
    assert data_main(["coinrun", f"--out={tmp_path}", "--episodes=1", "--frameskip=0",
                      "--no-progress"]) == 2
    assert "--frameskip must be >= 1; got 0" in capsys.readouterr().err
    # frameskip 1 writes the options of a dataset made before the option existed
    assert "frameskip" not in games.GameOptions(episodes=1).dataset_options("coinrun")
    assert games.GameOptions(episodes=1, frameskip=4).dataset_options("coinrun")["frameskip"] == 4


@pytest.mark.slow
def test_coinrun_frameskip_holds_each_action_for_k_game_steps(tmp_path):
    """Episode seed 0 with frameskip 4 is seed 0's game stepped 4 times per recorded frame:
    recorded frame t of the skipped episode is frame 4t of the unskipped one when the same
    action sequence is held; the policy draws per recorded frame, so with sticky=1 (one action
    for the whole episode) the two recordings must agree frame for frame."""
    one, four = str(tmp_path / "one"), str(tmp_path / "four")
    common = ["--episodes=1", "--block=1", "--split=1,0,0", "--sticky=1", "--no-progress"]
    assert data_main(["coinrun", f"--out={one}", "--length=41", *common]) == 0
    assert data_main(["coinrun", f"--out={four}", "--length=11", "--frameskip=4", *common]) == 0
    a, b = (shards.open_source(d, "train") for d in (one, four))
    fa, fb = a.read_episode(0)["frames"], b.read_episode(0)["frames"]
    n = min(len(fb), (len(fa) - 1) // 4 + 1)
    assert n >= 3
    np.testing.assert_array_equal(fb[:n], fa[::4][:n])
    assert b.metadata(0)["frameskip"] == 4 and b.metadata(0)["fps"] == pytest.approx(3.75)


def test_coinrun_class_policy_draws_one_action_per_class(tmp_path, capsys):
    assert [games.COINRUN_CLASS_NAMES[k] for k in
            games.coinrun_action_class(games.COINRUN_CLASS_ACTIONS)] == list(
                games.COINRUN_CLASS_NAMES)
    assert 4 in games.COINRUN_CLASS_ACTIONS  # procgen's own NOOP (no key pressed)
    # the default policy writes the options of a dataset made before the option existed
    assert "policy" not in games.GameOptions(episodes=1).dataset_options("coinrun")
    opts = games.GameOptions(episodes=1, policy="sticky_classes").dataset_options("coinrun")
    assert opts["policy"] == "sticky_classes"
    assert data_main(["atari", "--game=pong", f"--out={tmp_path}", "--episodes=1",
                      "--policy=sticky_classes", "--no-progress"]) == 2
    assert "--policy=sticky_classes is for CoinRun only" in capsys.readouterr().err


@pytest.mark.slow
def test_coinrun_class_policy_records_only_class_actions(tmp_path):
    out = str(tmp_path / "classes")
    assert data_main(["coinrun", f"--out={out}", "--episodes=2", "--length=60", "--block=1",
                      "--split=1,0,0", "--sticky=0", "--policy=sticky_classes",
                      "--no-progress"]) == 0
    src = _check_game_dataset(out, 2, 60, 15)
    actions = np.concatenate([src.read_episode(e)["actions"] for e in range(len(src))])
    assert set(actions.tolist()) == set(games.COINRUN_CLASS_ACTIONS)  # all 6, nothing else
    assert src.metadata(0)["policy"] == "sticky_classes"
