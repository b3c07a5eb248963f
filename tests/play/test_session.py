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


def test_converted_video_run_plays_from_its_val_split(fake_dyn, tmp_path):
    """A run on an on-disk dataset (as `genie-jax data convert` writes) whose 'test' split is
    empty: prompts come from 'val', and the world steps and makes its gallery."""
    import os

    from genie_jax.action_map import load_action_map
    from genie_jax.data import shards
    from genie_jax.evaluation import load_world_model
    from genie_jax.play.prompts import open_clips
    from genie_jax.play.session import PlayEngine
    from tests.stages.helpers import save_fake_dynamics_on_data
    data = str(tmp_path / "video")
    w = shards.UnitWriter(os.path.join(data, shards.STAGING_DIR), "u0", (16, 16, 3),
                          fractions=shards.parse_fractions("0,1,0"), record_frames=4)
    rng = np.random.default_rng(0)
    w.begin_episode(dict(source="clip.mp4", seed=0, fps=15.0))
    w.add(rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8), np.full(9, -1, np.int32))
    w.end_episode()
    w.commit()
    shards.finalize(data)
    dyn = save_fake_dynamics_on_data(str(tmp_path / "dyn"), fake_dyn, data)
    wm = load_world_model(dyn)
    clips = open_clips(wm.config, ["test", "val"], 2)
    assert clips.split == "val"
    with pytest.raises(UserError, match="no held-out prompts: .*'test'"):
        open_clips(wm.config, ["test"], 2)
    engine = PlayEngine(wm, load_action_map(dyn, int(wm.dynamics.num_actions)))
    s = PlaySession(engine, seed=0)
    frames, info = clips.clip(np.random.default_rng(0))
    s.reset(frames, info)
    assert info.startswith("val episode 0, frames ")
    assert s.step(2, "2").shape == (16, 16, 3)
    assert s.gallery().shape == (6, 16, 16, 3)
