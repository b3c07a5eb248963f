"""The step-by-step sampler: shapes, sliding buffer, determinism, one compile."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genie_jax.errors import UserError
from genie_jax.models.maskgit import maskgit_decode_frame
from genie_jax.sampling import WorldModel, infer_actions, rollout
from tests.stages.helpers import frames_batch, save_fake_pipeline, save_fake_run, test_config as _cfg


@pytest.fixture(scope="module")
def wm_dir(tmp_path_factory):
    return save_fake_pipeline(tmp_path_factory.mktemp("runs"))


def test_step_shapes_sliding_buffer_and_single_compile(wm_dir):
    wm = WorldModel.load(wm_dir)
    M, N = wm.max_frames, wm.N
    assert (M, N, wm.steps) == (4, 16, 4)
    prompt = jnp.asarray(frames_batch(2, 2, 16))
    state = wm.reset(prompt, seed=0)
    assert state["tokens"].shape == (2, M, N) and int(state["length"]) == 2
    assert state["actions"].shape == (2, M - 1)
    lens = []
    for i in range(M + 3):
        prev = state
        frame, state = wm.step(state, jnp.array([i % 6, (i + 1) % 6]))
        assert frame.shape == (2, 16, 16, 3) and frame.dtype == jnp.float32
        assert float(frame.min()) >= 0 and float(frame.max()) <= 1
        L = int(state["length"])
        lens.append(L)
        t = L - 1
        assert int(state["tokens"][:, t].max()) < wm.dynamics.num_codes  # fully decoded
        np.testing.assert_array_equal(state["actions"][:, t - 1], [i % 6, (i + 1) % 6])
        if int(prev["length"]) == M:  # slid by one frame: old frames 1..M-1 are now 0..M-2
            np.testing.assert_array_equal(state["tokens"][:, :M - 1], prev["tokens"][:, 1:])
            np.testing.assert_array_equal(state["actions"][:, :M - 2], prev["actions"][:, 1:])
    assert lens == [3, 4, 4, 4, 4, 4, 4]
    assert wm.trace_count == 1  # one compile for every step, including the sliding ones


def test_seeded_and_reproducible(wm_dir):
    wm = WorldModel.load(wm_dir)
    prompt = jnp.asarray(frames_batch(1, 1, 16))
    acts = jnp.array([[1, 2, 3, 4, 5]])
    a = rollout(wm, prompt, acts, seed=3)
    b = rollout(wm, prompt, acts, seed=3)
    c = rollout(wm, prompt, acts, seed=4)
    assert a.shape == (1, 5, 16, 16, 3)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 0
    # rollout == stepping by hand with the same seed
    state = wm.reset(prompt, seed=3)
    for s in range(5):
        f, state = wm.step(state, acts[:, s])
        np.testing.assert_array_equal(f, a[:, s])
    assert wm.trace_count == 1


def test_kv_cache_samples_the_same_frames_as_the_full_buffer_path(wm_dir):
    # Greedy decoding: the cached one-frame passes must pick exactly the tokens the reference
    # (whole buffer at every MaskGIT step) picks, including after the buffer slides.
    cached = WorldModel.load(wm_dir, temperature=0.0)
    ref = WorldModel.load(wm_dir, temperature=0.0, kv_cache=False)
    prompt = jnp.asarray(frames_batch(2, 2, 16, seed=2))
    acts = jnp.array([[1, 2, 3, 4, 5, 0], [5, 4, 3, 2, 1, 0]])
    s_c, s_r = cached.reset(prompt, seed=1), ref.reset(prompt, seed=1)
    for i in range(acts.shape[1]):
        f_c, s_c = cached.step(s_c, acts[:, i])
        f_r, s_r = ref.step(s_r, acts[:, i])
        np.testing.assert_array_equal(s_c["tokens"], s_r["tokens"])
        np.testing.assert_allclose(f_c, f_r, atol=1e-6)


def test_infer_actions_and_prompt_actions(wm_dir):
    wm = WorldModel.load(wm_dir, steps=2, temperature=0.0)
    clip = jnp.asarray(frames_batch(2, 4, 16, seed=1))
    codes = infer_actions(wm, clip)
    assert codes.shape == (2, 3) and int(codes.min()) >= 0 and int(codes.max()) < 6
    state = wm.reset(clip[:, :3])  # inferred from the prompt with the LAM
    np.testing.assert_array_equal(state["actions"][:, :2], codes[:, :2])
    state = wm.reset(clip[:, :3], prompt_actions=jnp.array([[5, 4], [3, 2]]))
    np.testing.assert_array_equal(state["actions"][:, :2], [[5, 4], [3, 2]])
    with pytest.raises(UserError, match="prompt_actions"):
        wm.reset(clip[:, :3], prompt_actions=jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(UserError, match="max_frames"):
        WorldModel.load(wm_dir, max_frames=99)


def test_load_cotrained_run_uses_its_own_lam(tmp_path):
    tok, dyn = str(tmp_path / "tok"), str(tmp_path / "dyn")
    save_fake_run(tok, _cfg("tokenizer"))
    params = save_fake_run(dyn, _cfg("dynamics", f"size=test,tokenizer={tok},lam_mode=cotrain"))
    wm = WorldModel.load(dyn, steps=1)
    assert set(wm.params) == {"dynamics", "lam", "tokenizer"}
    for a, b in zip(jax.tree.leaves(wm.params["lam"]), jax.tree.leaves(params["lam"])):
        np.testing.assert_array_equal(a, b)
    frames = rollout(wm, frames_batch(1, 3, 16), jnp.array([[1, 1]]))  # prompt actions via LAM
    assert frames.shape == (1, 2, 16, 16, 3)


def test_load_refuses_a_non_dynamics_run(tmp_path):
    tok = str(tmp_path / "tok")
    save_fake_run(tok, _cfg("tokenizer"))
    with pytest.raises(UserError, match="not a dynamics run"):
        WorldModel.load(tok)


@pytest.fixture(scope="module")
def rope_dir(tmp_path_factory):
    """A fake pipeline whose dynamics has rotary temporal positions (rolling cache)."""
    root = tmp_path_factory.mktemp("rope")
    tok, lam, dyn = str(root / "tok"), str(root / "lam"), str(root / "dyn")
    save_fake_run(tok, _cfg("tokenizer"))
    save_fake_run(lam, _cfg("lam"))
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}")
    cfg.model.temporal_pos = "rope"
    save_fake_run(dyn, cfg)
    return dyn


def test_rolling_cache_greedy_equals_the_banded_reference_across_slides(rope_dir):
    # The rolling cache means: a causal pass over the whole video in which each frame sees its
    # max_frames latest frames. Greedy steps must pick exactly the tokens that MaskGIT over that
    # reference picks, before and after the buffer slides, with one compile.
    wm = WorldModel.load(rope_dir, temperature=0.0)
    assert wm.rolling and "kv" in wm.reset(frames_batch(1, 1, 16))
    M, N, dyn, p = wm.max_frames, wm.N, wm.dynamics, wm.params["dynamics"]
    state = wm.reset(jnp.asarray(frames_batch(2, 2, 16, seed=2)), seed=1)
    hist_tokens, hist_actions = state["tokens"][:, :2], state["actions"][:, :1]
    acts = jnp.array([[1, 2, 3, 4, 5, 0, 1, 2], [5, 4, 3, 2, 1, 0, 5, 4]])
    for i in range(acts.shape[1]):
        frame, state = wm.step(state, acts[:, i])
        a = jnp.concatenate([hist_actions, acts[:, i:i + 1]], axis=1)

        def logits_fn(f, h=hist_tokens, a=a):
            video = jnp.concatenate([h, f[:, None]], axis=1)
            return dyn.apply({"params": p}, video, a, temporal_window=M)[:, -1]

        ref = maskgit_decode_frame(logits_fn, 2, N, jax.random.PRNGKey(0), mask_id=dyn.mask_id,
                                   steps=wm.steps, temperature=0.0, schedule=wm.schedule)
        t = int(state["length"]) - 1
        np.testing.assert_array_equal(state["tokens"][:, t], ref)
        hist_tokens, hist_actions = jnp.concatenate([hist_tokens, ref[:, None]], axis=1), a
    assert hist_tokens.shape[1] > M + 2  # slid several times
    assert wm.trace_count == 1


def test_rolling_cache_is_seeded_and_can_be_turned_off(rope_dir):
    wm = WorldModel.load(rope_dir)
    prompt, acts = frames_batch(1, 1, 16), jnp.array([[1, 2, 3, 4, 5, 0]])
    np.testing.assert_array_equal(rollout(wm, prompt, acts, seed=3),
                                  rollout(wm, prompt, acts, seed=3))
    off = WorldModel.load(rope_dir, rolling_cache=False)  # context pass per step, no 'kv'
    assert not off.rolling and "kv" not in off.reset(prompt)
    assert rollout(off, prompt, acts).shape == (1, 6, 16, 16, 3)


def test_rolling_cache_needs_rotary_positions(wm_dir):
    with pytest.raises(UserError, match="temporal_pos"):
        WorldModel.load(wm_dir, rolling_cache=True)


def test_per_frame_tokenizer_decodes_the_new_frame_alone(tmp_path):
    """A tokenizer with temporal='none' (frames coded alone): the sampler decodes only the frame
    it made, and that is the frame a decode of the whole buffer gives."""
    from genie_jax.models.tokenizer import Tokenizer
    tok, lam, dyn = (str(tmp_path / n) for n in ("tok", "lam", "dyn"))
    save_fake_run(tok, _cfg("tokenizer", "size=test,temporal=none"))
    save_fake_run(lam, _cfg("lam"))
    save_fake_run(dyn, _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam},tok_temporal=none"))
    wm = WorldModel.load(dyn)
    assert wm.tokenizer.temporal == "none"
    state = wm.reset(jnp.asarray(frames_batch(2, 1, 16, seed=2)), seed=0)
    for a in (1, 2):
        frame, state = wm.step(state, a)
    t = int(state["length"]) - 1
    whole = wm.tokenizer.apply({"params": wm.params["tokenizer"]}, state["tokens"],
                               method=Tokenizer.decode, mutable=["vq_stats"])[0]
    np.testing.assert_allclose(frame, np.clip(whole[:, t], 0, 1), atol=1e-5)
    # a dynamics config that calls that tokenizer causal is refused by its checkpoint meta
    causal = str(tmp_path / "dyn_causal")
    save_fake_run(causal, _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}"))
    with pytest.raises(UserError, match="temporal"):
        WorldModel.load(causal)


def test_copy_step_repeats_the_last_tokens_through_slides(wm_dir):
    """copy_step: the last frame's tokens again, in the sampler's sliding buffer. From a 1-frame
    prompt the buffer holds the prompt's tokens M times over, so (the decoder being causal) step
    s shows slot min(s, M-1) of that buffer decoded."""
    from genie_jax.models.tokenizer import Tokenizer
    from genie_jax.stages.dynamics import encode_tokens
    wm = WorldModel.load(wm_dir)
    M = wm.max_frames
    prompt = jnp.asarray(frames_batch(2, 1, 16, seed=4))
    z0 = encode_tokens(wm.tokenizer, wm.params["tokenizer"], prompt)[:, 0]
    still = wm.tokenizer.apply({"params": wm.params["tokenizer"]},
                               jnp.repeat(z0[:, None], M, axis=1), method=Tokenizer.decode,
                               mutable=["vq_stats"])[0]
    state = wm.reset(prompt, seed=0)
    for s in range(1, M + 2):
        frame, state = wm.copy_step(state)
        np.testing.assert_allclose(frame, np.clip(still[:, min(s, M - 1)], 0, 1), atol=1e-5)
    np.testing.assert_array_equal(state["tokens"], np.repeat(np.asarray(z0)[:, None], M, axis=1))


def test_unrolled_maskgit_and_bf16_weights_sample_the_same_tokens(tmp_path):
    # Two speed levers that must not change outputs: MaskGIT steps unrolled into one loop trip
    # (unroll=3 of 4 steps: a remainder too), and a bf16 dynamics reading bf16 weights stored
    # once (cast_params) instead of converting its f32 weights in every pass. Sampled and
    # greedy, across buffer slides.
    tok, lam, dyn = str(tmp_path / "tok"), str(tmp_path / "lam"), str(tmp_path / "dyn")
    save_fake_run(tok, _cfg("tokenizer"))
    save_fake_run(lam, _cfg("lam"))
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam}")
    cfg.model.temporal_pos, cfg.model.dtype = "rope", "bfloat16"
    save_fake_run(dyn, cfg)
    prompt = frames_batch(2, 2, 16, seed=2)
    acts = jnp.array([[1, 2, 3, 4, 5, 0, 1], [5, 4, 3, 2, 1, 0, 5]])

    def tokens(**kw):
        wm = WorldModel.load(dyn, **kw)
        state, out = wm.reset(prompt, seed=1), []
        for i in range(acts.shape[1]):
            _, state = wm.step(state, acts[:, i])
            out.append(np.asarray(state["tokens"][:, int(state["length"]) - 1]))
        assert wm.trace_count == 1
        return wm, np.stack(out)

    for temperature in (0.0, 1.0):
        wm, ref = tokens(temperature=temperature, cast_params=False, unroll=1)
        assert {a.dtype for a in jax.tree.leaves(wm.params["dynamics"])} == {jnp.dtype("float32")}
        wm, fast = tokens(temperature=temperature, cast_params=True, unroll=3)
        assert {a.dtype for a in jax.tree.leaves(wm.params["dynamics"])} == {jnp.dtype("bfloat16")}
        np.testing.assert_array_equal(fast, ref)
    with pytest.raises(UserError, match="unroll"):
        WorldModel.load(dyn, unroll=0)


@pytest.mark.parametrize("temporal_pos,guidance", [("learned", 1.0), ("rope", 1.0),
                                                    ("learned", 2.5), ("rope", 2.5)])
def test_copy_gate_one_frame_passes_equal_the_full_buffer_path(tmp_path, temporal_pos, guidance):
    # A copy_gate dynamics reads the previous frame in its one-frame passes (sampler._prev):
    # greedy cached (or rolling) steps pick exactly the reference path's tokens across slides.
    # Guided, the cache and the previous frame are doubled for the batch of 2B (the reference
    # doubles its token buffer instead).
    tok, lam, dyn = str(tmp_path / "tok"), str(tmp_path / "lam"), str(tmp_path / "dyn")
    save_fake_run(tok, _cfg("tokenizer"))
    save_fake_run(lam, _cfg("lam"))
    cfg = _cfg("dynamics", f"size=test,tokenizer={tok},lam={lam},copy_gate=true,"
                           f"temporal_pos={temporal_pos}")
    save_fake_run(dyn, cfg)
    fast = WorldModel.load(dyn, temperature=0.0, guidance=guidance)
    ref = WorldModel.load(dyn, temperature=0.0, kv_cache=False, guidance=guidance)
    assert fast.rolling == (temporal_pos == "rope")
    p = dict(fast.params["dynamics"])  # a gate that varies by patch (random params start flat)
    p["copy_gate_w"] = jax.random.normal(jax.random.PRNGKey(5), p["copy_gate_w"].shape) * 200.0
    p["copy_gate_b"] = jnp.zeros_like(p["copy_gate_b"])
    fast.params = ref.params = {**fast.params, "dynamics": p}
    prompt = jnp.asarray(frames_batch(2, 2, 16, seed=2))
    acts = jnp.array([[1, 2, 3, 4, 5, 0], [5, 4, 3, 2, 1, 0]])
    off = WorldModel.load(dyn, temperature=0.0, guidance=guidance)  # the gate shut
    off.params = {**fast.params, "dynamics": {**p, "copy_gate_w": jnp.zeros_like(p["copy_gate_w"]),
                                              "copy_gate_b": jnp.full_like(p["copy_gate_b"], -1e4)}}
    s_f, s_r, s_o = fast.reset(prompt, seed=1), ref.reset(prompt, seed=1), off.reset(prompt, seed=1)
    for i in range(acts.shape[1]):
        _, s_f = fast.step(s_f, acts[:, i])
        _, s_r = ref.step(s_r, acts[:, i])
        _, s_o = off.step(s_o, acts[:, i])
        np.testing.assert_array_equal(s_f["tokens"], s_r["tokens"])
    assert not np.array_equal(s_f["tokens"], s_o["tokens"])  # the gate changed what was sampled


def test_mbr_pick_is_deterministic_and_checked(wm_dir):
    wm = WorldModel.load(wm_dir, pick="mbr")
    assert wm.pick == "mbr"
    prompt = jnp.asarray(frames_batch(1, 1, 16))
    acts = jnp.array([[1, 2, 3, 4, 5]])
    a = rollout(wm, prompt, acts, seed=3)
    np.testing.assert_array_equal(a, rollout(wm, prompt, acts, seed=4))  # no draw: seed-free
    assert wm.trace_count == 1
    with pytest.raises(UserError, match="pick"):
        WorldModel.load(wm_dir, pick="nucleus")


def test_action_guidance_combines_the_two_passes_and_is_checked(wm_dir):
    wm = WorldModel.load(wm_dir, guidance=3.0)
    assert wm.guidance == 3.0 and WorldModel.load(wm_dir).guidance == 1.0
    B, N, V, t = 2, 4, 5, 2
    cond, uncond = (jax.random.normal(jax.random.PRNGKey(i), (B, N, V)) for i in (0, 1))
    actions = jnp.array([[1, 2, 3], [4, 5, 0]])
    seen = []

    def logits_fa(frame_XN, a):  # a stub pass: "no action" at transition t-1 -> t picks uncond
        seen.append((frame_XN, a))
        return jnp.where((a[:, t - 1] < 0)[:, None, None], jnp.tile(uncond, (2, 1, 1)),
                         jnp.tile(cond, (2, 1, 1)))
    frame_BN = jnp.arange(B * N, dtype=jnp.int32).reshape(B, N)
    got = wm._guided(logits_fa, actions, t)(frame_BN)
    lc, lu = jax.nn.log_softmax(cond), jax.nn.log_softmax(uncond)
    np.testing.assert_allclose(got, lu + 3.0 * (lc - lu), rtol=1e-5, atol=1e-5)
    (frame_XN, a), = seen  # one pass of 2B: the frame twice, with and without its action
    np.testing.assert_array_equal(frame_XN, jnp.concatenate([frame_BN, frame_BN]))
    np.testing.assert_array_equal(a, [[1, 2, 3], [4, 5, 0],
                                      [1, -1, 3], [4, -1, 0]])  # only this frame's action
    for bad in (-1.0, float("nan")):
        with pytest.raises(UserError, match="guidance"):
            WorldModel.load(wm_dir, guidance=bad)


def test_action_guidance_zero_ignores_the_frames_action_and_caching_agrees(wm_dir):
    prompt = jnp.asarray(frames_batch(2, 2, 16, seed=2))
    w0 = WorldModel.load(wm_dir, guidance=0.0)
    frames = [w0.step(w0.reset(prompt, seed=1), jnp.array([a, a]))[0] for a in (1, 4)]
    np.testing.assert_array_equal(*frames)  # w=0 samples from the "no action" pass alone
    w1 = WorldModel.load(wm_dir)
    assert not np.array_equal(*[w1.step(w1.reset(prompt, seed=1), jnp.array([a, a]))[0]
                                for a in (1, 4)])
    # greedy: the cached one-frame passes and the whole-buffer reference pick the same tokens
    cached = WorldModel.load(wm_dir, temperature=0.0, guidance=2.5)
    ref = WorldModel.load(wm_dir, temperature=0.0, guidance=2.5, kv_cache=False)
    acts = jnp.array([[1, 2, 3, 4], [5, 4, 3, 2]])
    s_c, s_r = cached.reset(prompt, seed=1), ref.reset(prompt, seed=1)
    for i in range(acts.shape[1]):
        _, s_c = cached.step(s_c, acts[:, i])
        _, s_r = ref.step(s_r, acts[:, i])
        np.testing.assert_array_equal(s_c["tokens"], s_r["tokens"])
