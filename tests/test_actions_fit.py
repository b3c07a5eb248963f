"""actions_fit: the counts table, control -> latent choice, held-out accuracy and chance, the
pairing of LAM windows with true actions (a stub LAM that reads the action off the frames)."""
import numpy as np
import pytest

from genie_jax.actions_fit import (accuracy_report, balanced_decoder, control_latents,
                                   controls_of, counts_table, latent_decoder, transition_pairs)
from genie_jax.data.games import COINRUN_ACTION_CLASSES, COINRUN_CLASS_NAMES
from genie_jax.errors import UserError


def test_counts_and_the_choice_of_latent_per_control():
    # Latent 0 is the LAM's dominant code: majority vote would give it to every control.
    # Control 1 is best predicted by latent 2, control 2 by latent 1; control 3 is never seen.
    counts = np.array([[50, 0, 0],
                       [30, 1, 10],
                       [20, 9, 0],
                       [0, 0, 0]])
    latent = np.repeat(np.tile(np.arange(3), 4), counts.reshape(-1))
    control = np.repeat(np.repeat(np.arange(4), 3), counts.reshape(-1))
    np.testing.assert_array_equal(counts_table(latent, control, 4, 3), counts)
    np.testing.assert_array_equal(control_latents(counts), [0, 2, 1, -1])
    np.testing.assert_array_equal(np.argmax(counts[:3], axis=1), [0, 0, 0])  # majority vote
    np.testing.assert_array_equal(latent_decoder(counts), [0, 2, 1])


def test_prior_keeps_a_rare_latent_from_winning_on_few_counts():
    # Control 1: latent 2 is pure but seen twice; latent 1 is 60 of 100. Shrunk: 2 -> 0.29 < 0.52.
    counts = np.array([[200, 40, 0], [0, 60, 2]])
    assert control_latents(counts)[1] == 1
    assert control_latents(counts, prior=0.0)[1] == 2


def test_decoder_sends_unseen_latents_to_the_most_common_control():
    counts = np.array([[5, 0, 0], [1, 0, 7]])
    np.testing.assert_array_equal(latent_decoder(counts), [0, 1, 1])


def test_balanced_decoder_is_not_swamped_by_a_dominant_control():
    # Control 1 is 90% of transitions: every latent's most common control is 1, but latent 0
    # is twice as likely under control 0 as under control 1.
    counts = np.array([[6, 4, 0], [30, 50, 10]])
    np.testing.assert_array_equal(latent_decoder(counts), [1, 1, 1])
    np.testing.assert_array_equal(balanced_decoder(counts), [0, 1, 1])
    np.testing.assert_array_equal(balanced_decoder(np.array([[0, 0], [1, 3]])), [1, 1])


def test_accuracy_and_chance():
    decoder, balanced = np.array([0, 1, 1]), np.array([0, 0, 1])
    latent = np.array([0, 0, 1, 2, 2, 1])
    control = np.array([0, 1, 1, 1, 0, 1])  # predictions 0 0 1 1 1 1: 4 of 6 right
    r = accuracy_report(decoder, balanced, 1, latent, control, 2)
    assert r["transitions"] == 6 and r["accuracy"] == pytest.approx(4 / 6)
    assert r["chance"] == pytest.approx(4 / 6)  # always predicting control 1
    # balanced predictions 0 0 0 1 1 0: recall of control 0 is 1/2, of control 1 is 1/4
    assert r["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert r["balanced_chance"] == 0.5
    assert accuracy_report(decoder, balanced, 1, latent[:0], control[:0], 2)["accuracy"] is None


class _Source:
    """An EpisodeSource with a chosen `source` metadata; frame [t,0,0,0] holds the true action
    of transition t -> t+1 (255 after the last)."""

    def __init__(self, actions_list, name="procgen:coinrun", action_names=None, hw=4):
        self.actions_list, self.name, self.action_names = actions_list, name, action_names
        self.frame_shape, self.has_actions = (hw, hw, 3), True

    def episode_lengths(self):
        return np.array([len(a) for a in self.actions_list])

    def metadata(self, e):
        m = {"source": self.name}
        if self.action_names:
            m["action_names"] = list(self.action_names)
        return m

    def read_window(self, e, start, length):
        a = np.asarray(self.actions_list[e], np.int32)
        frames = np.zeros((len(a), *self.frame_shape), np.uint8)
        frames[:, 0, 0, 0] = a
        frames[-1, 0, 0, 0] = 255
        return {"frames": frames[start:start + length], "actions": a[start:start + length]}


class _StubLAM:
    """infer_actions reads the action off frame t: latent = perm[class(action)]."""

    def __init__(self, classify, perm):
        self.classify, self.perm, self.shapes = classify, np.asarray(perm), set()

    def infer_actions(self, frames_BTHWC):
        self.shapes.add(frames_BTHWC.shape)
        a = frames_BTHWC[:, :-1, 0, 0, 0].astype(np.int64)
        return self.perm[self.classify(a)]


def test_coinrun_controls_and_pairing_recover_a_known_map():
    rng = np.random.default_rng(0)
    lengths = [23, 9, 4, 3, 17]  # 3 frames: shorter than the window, skipped
    eps = [rng.integers(0, 15, n) for n in lengths]
    src = _Source(eps)
    ctl = controls_of(src, range(5), "test data")
    assert ctl.kind == "coinrun" and ctl.names == COINRUN_CLASS_NAMES
    np.testing.assert_array_equal(ctl.classify([0, 2, 8, 14, 15, -1]),
                                  [COINRUN_ACTION_CLASSES[0], 1, 5, 2, -1, -1])
    perm = [4, 0, 5, 1, 3, 2]  # class k -> latent perm[k]
    lam = _StubLAM(ctl.classify, perm)
    latent, true, stats = transition_pairs(lam, src, range(5), window=4, batch_size=3,
                                           controls=ctl)
    assert stats == {"episodes": 4, "episodes_too_short": 1,
                     "transitions": 22 + 8 + 3 + 16, "unknown_actions": 0}
    assert lam.shapes == {(3, 4, 4, 4, 3)}  # one padded batch shape: one compile
    np.testing.assert_array_equal(latent, np.asarray(perm)[true])  # every transition paired
    expected = np.concatenate([ctl.classify(e[:-1]) for i, e in enumerate(eps) if i != 3])
    np.testing.assert_array_equal(true, expected)
    counts = counts_table(latent, true, 6, 6)
    seen = counts.sum(1) > 0
    np.testing.assert_array_equal(control_latents(counts)[seen], np.asarray(perm)[seen])
    r = accuracy_report(latent_decoder(counts), balanced_decoder(counts),
                        int(np.argmax(counts.sum(1))), latent, true, 6)
    assert r["accuracy"] == 1.0 and r["balanced_accuracy"] == 1.0 and r["chance"] < 1.0


def test_unknown_true_actions_are_dropped():
    src = _Source([np.array([1, -1, 6, 6, 0])], name="ale:pong",
                  action_names=("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE", "X"))
    ctl = controls_of(src, [0], "test data")
    assert ctl.kind == "atari" and ctl.names[-1] == "X"
    lam = _StubLAM(lambda a: np.where(a < 7, a, 0), np.arange(7))  # -1 reads as 255
    latent, true, stats = transition_pairs(lam, src, [0], window=3, batch_size=2, controls=ctl)
    assert stats["transitions"] == 4 and stats["unknown_actions"] == 1
    np.testing.assert_array_equal(true, [1, 6, 6])
    np.testing.assert_array_equal(latent, [1, 6, 6])


def test_controls_of_other_sources():
    assert controls_of(_Source([[0, 1]], name="procedural"), [0], "d").names == (
        "NOOP", "LEFT", "RIGHT", "UP", "DOWN")
    assert controls_of(_Source([[0, 1]], name="videos/a.mp4"), [0], "d").kind == "ids"

    class Mixed(_Source):
        def metadata(self, e):
            return {"source": ["ale:pong", "ale:breakout"][e], "action_names": ["NOOP"]}
    with pytest.raises(UserError, match="mixes Atari games"):
        controls_of(Mixed([[0, 1], [0, 1]]), [0, 1], "d")

    class NoNames(_Source):
        def metadata(self, e):
            return {"source": "ale:pong"}
    with pytest.raises(UserError, match="action_names"):
        controls_of(NoNames([[0, 1]]), [0], "d")
