"""PlayEngine / PlaySession: the batched gallery, independent sessions, step-back, bounds."""
import numpy as np
import pytest

from genie_jax.errors import UserError
from genie_jax.play.session import PlaySession


def _prompt(clips, seed=0):
    return clips.clip(np.random.default_rng(seed))[0]


def test_gallery_is_one_batched_step_equal_to_single_steps(greedy_engine, clips):
    eng = greedy_engine
    state = eng.reset(_prompt(clips), seed=0)
    calls = []
    real_step = eng.wm.step

    def counting_step(s, a):
        calls.append(np.asarray(a).shape)
        return real_step(s, a)
    eng.wm.step = counting_step
    try:
        gallery = eng.gallery(state)
    finally:
        eng.wm.step = real_step
    A = eng.num_actions
    assert calls == [(A,)], "the gallery must be one step over a batch of A actions"
    assert gallery.shape == (A, *eng.image_size, eng.channels) and gallery.dtype == np.uint8
    singles = np.stack([eng.step(state, a)[0] for a in range(A)])
    np.testing.assert_array_equal(gallery, singles)   # greedy: batching changes nothing
    assert len({g.tobytes() for g in gallery}) > 1    # the actions matter (this prompt, seed)


def test_sessions_do_not_share_state(greedy_engine, clips):
    a = PlaySession(greedy_engine, seed=0, number=0)
    b = PlaySession(greedy_engine, seed=0, number=1)
    p = _prompt(clips)
    start_a, start_b = a.reset(p, "x"), b.reset(p, "x")
    np.testing.assert_array_equal(start_a, start_b)
    first = a.step(1, "1")
    for act in (2, 3, 0):
        a.step(act, str(act))
    assert a.frames_generated == 4 and b.frames_generated == 0
    np.testing.assert_array_equal(b.history[-1].frame, start_b)
    np.testing.assert_array_equal(b.step(1, "1"), first)  # b starts where a started


def test_step_back_and_bounded_history(greedy_engine, clips):
    s = PlaySession(greedy_engine, seed=0, max_history=3)
    with pytest.raises(UserError, match="reset first"):
        s.step(0, "0")
    start = s.reset(_prompt(clips), "x")
    with pytest.raises(UserError, match="nothing to step back"):
        s.back()
    f1 = s.step(1, "1")
    s.step(2, "2")
    np.testing.assert_array_equal(s.back(), f1)
    np.testing.assert_array_equal(s.back(), start)
    for a in range(5):
        s.step(a % 6, str(a))
    assert len(s.history) == 3          # at most max_history states are kept
    s.back(), s.back()
    with pytest.raises(UserError):
        s.back()
    video = s.video()
    assert video.shape[0] == 4 and video.dtype == np.uint8  # 3 frames that left + current
    assert s.latency()["step_ms"] > 0 and s.latency()["step_ms_p50"] > 0
