"""Interactive sampling from a trained dynamics run: one frame per call, action chosen each step.

    wm = WorldModel.load("runs/dyn")              # dynamics run + the tokenizer/LAM it names
    state = wm.reset(prompt_frames, seed=0)       # uint8/float [B, T0, H, W, C]
    frame, state = wm.step(state, action)         # action: int [B] latent action id
    frames = rollout(wm, prompt_frames, actions)  # actions [B, S] given up front
    codes = infer_actions(wm, clip)               # LAM latent actions [B, T-1] of a real clip

Cost per frame: one context pass over the buffer caches the temporal keys/values of frames < t
(causality: they cannot change), then each MaskGIT step runs the transformer on frame t alone,
so a step costs about (M - 1 + steps) frame-passes rather than M * steps; with a rolling cache
(below) about (steps + 1). The tokenizer then decodes the buffer (its causal decoder needs the
earlier frames; its positions are absolute, so that pass is not cached).

Fixed shapes: the state holds a token buffer of `max_frames` frames [B, M, N], the actions of
the transitions between them [B, M-1], the number of valid frames `length` and the rng. Each step
writes the action for transition (length-1 -> length), MaskGIT-decodes frame `length` (the
dynamics is causal in time, so buffer slots after it do not matter), and decodes that frame with
the tokenizer (a per-frame tokenizer, `model.temporal='none'`, decodes that frame alone). When
the buffer is full it slides by one frame first. So `step` compiles once
(`trace_count` counts its traces) whatever the number of steps.

Rolling cache (dynamics with `model.temporal_pos='rope'`, the default there): the temporal
keys/values live in the state as well ('kv', batch first) and survive the slide: a full buffer
rolls them by one slot with the tokens, the frame being made is written into the last slot, and
one commit pass stores the finished frame's keys/values. A step then costs about (steps + 1)
frame-passes whatever the buffer length. Its meaning is a causal pass over the whole video in
which each frame attends to the `max_frames` latest frames (`Dynamics(temporal_window=M)`):
frames that left the buffer still shaped the cached ones. Learned absolute positions cannot
do this (every slide moves every frame), so they keep the context pass.

MaskGIT decoding (genie_jax/models/maskgit.py): every token of the new frame starts masked and
`steps` steps unmask it by confidence. Reproducible: the rng lives in the state.

Action guidance (`guidance=w`, as classifier-free guidance): each MaskGIT step runs frame t twice,
with its action and with "no action" (the same cached past, one batch of 2B), and samples from
u + w (c - u) in log-probabilities. The CoinRun configs decode by one such pass picking tokens by
minimum Bayes risk (`pick='mbr'`, steps 1, guidance 3; 1.5 at the quality budget).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genie_jax.errors import UserError
from genie_jax.models.maskgit import ORDERS, PICKS, mask_ratio, maskgit_decode_frame
from genie_jax.models.st_transformer import unstack_blocks
from genie_jax.models.tokenizer import Tokenizer
from genie_jax.runs import Run, abstract_variables, stage_meta
from genie_jax.stages.base import load_frozen
from genie_jax.stages.dynamics import (DynamicsStage, encode_tokens, lam_actions,
                                       lam_input_tokens)

def cast_floats(tree, dtype):
    """Every floating leaf of `tree` in `dtype` (others unchanged)."""
    dtype = jnp.dtype(dtype)
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                        else a, tree)


class WorldModel:
    def __init__(self, config, params: dict, *, steps: int | None = None,
                 temperature: float | None = None, schedule: str | None = None,
                 max_frames: int | None = None, kv_cache: bool = True,
                 rolling_cache: bool | None = None, order: str | None = None,
                 unroll: int | None = None, cast_params: bool = True,
                 pick: str | None = None, guidance: float | None = None):
        """params: {'dynamics', 'tokenizer', 'lam' (optional: needed for inferring actions)}.
        kv_cache=False re-runs the whole buffer at every MaskGIT step (the slow reference).
        rolling_cache: keep the KV cache across steps (module docstring); default: on for a
        dynamics with rotary temporal positions, which it needs.
        order: which tokens MaskGIT keeps per step, 'confidence' (default) or 'halton'.
        pick: how each MaskGIT step picks a token, 'sample' (default: at the temperature) or
        'mbr' (minimum Bayes risk in the tokenizer's code space, models/maskgit.py; the
        temperature is then unused).
        guidance: action guidance w (default: the run's sampling.guidance, else 1, none). Each
        MaskGIT step's logits become u + w (c - u), c with the frame's action and u with "no
        action" (log-probabilities; the past keeps its actions): w > 1 strengthens what the
        action changes. Each MaskGIT step's pass runs on a batch of 2B (and holds the cached past
        twice). "No action" is what frame 0 is trained with; loss.action_dropout also trains it
        later in the window (on the quickstart world that gained nothing measurable:
        experiments/RESULTS.md).
        unroll: MaskGIT steps per loop iteration in the compiled step (default 1; the same
        outputs, a longer compile, fewer loop trips).
        cast_params: store the dynamics' floating params once in its compute dtype (a bf16
        model then reads bf16 weights instead of converting f32 ones in each of its passes;
        the values a pass sees are the same). Off: the trained f32 params as they are."""
        self.kv_cache = bool(kv_cache)
        self.config = config
        stage = DynamicsStage(config)
        # remat only saves training memory; the sampler's passes are forward-only. The KV-cache
        # passes run the unrolled stack: a run trained with model.scan_layers has its stacked
        # block params split per block here (the same weights, st_transformer.unstack_blocks).
        self.dynamics = stage.model.clone(remat="none", scan_layers=False)
        self.tokenizer, self.lam = stage.tokenizer, stage.lam
        if "dynamics" in params:
            dyn = unstack_blocks(params["dynamics"])
            if cast_params:
                dyn = cast_floats(dyn, self.dynamics.dtypes()[0])
            params = {**params, "dynamics": dyn}
        self.params = params
        sc = config.get("sampling", {})
        self.steps = int(steps if steps is not None else sc.get("steps", 8))
        self.temperature = float(temperature if temperature is not None else
                                 sc.get("temperature", 1.0))
        self.schedule = schedule or sc.get("schedule", "cosine")
        mask_ratio(self.schedule, 0.0)  # validates the name
        self.order = order or sc.get("order", "confidence")
        if self.order not in ORDERS:
            raise UserError(f"sampling order must be one of {ORDERS}; got {self.order!r}")
        self.pick = pick or sc.get("pick", "sample")
        if self.pick not in PICKS:
            raise UserError(f"sampling pick must be one of {PICKS}; got {self.pick!r}")
        M = int(max_frames or sc.get("max_frames", 0) or config.data.num_frames)
        limit = min(self.dynamics.max_frames, self.tokenizer.max_frames)
        if not 2 <= M <= limit:
            raise UserError(f"sampling max_frames={M} must be in [2, {limit}] (the dynamics' and "
                            f"tokenizer's model.max_frames)")
        if self.steps < 1:
            raise UserError(f"sampling steps must be >= 1; got {self.steps}")
        self.guidance = float(guidance if guidance is not None else sc.get("guidance", 1.0))
        if not (self.guidance >= 0 and math.isfinite(self.guidance)):
            raise UserError(f"sampling guidance must be a finite number >= 0; got {self.guidance}")
        self.unroll = int(unroll if unroll is not None else sc.get("unroll", 1))
        if self.unroll < 1:
            raise UserError(f"sampling unroll must be >= 1; got {self.unroll}")
        self.max_frames = M
        self.N = self.dynamics.tokens_per_frame
        rope = getattr(self.dynamics, "temporal_pos", "learned") == "rope"
        if rolling_cache and not rope:
            raise UserError("rolling_cache needs a dynamics model with model.temporal_pos='rope' "
                            "(learned absolute positions move with every slide of the buffer)")
        self.rolling = bool(rope and self.kv_cache if rolling_cache is None else rolling_cache)
        self.trace_count = 0
        self._step = jax.jit(self._step_impl)
        self._reset = jax.jit(self._reset_impl)
        self._infer = jax.jit(self._infer_impl)
        self._copy_step = jax.jit(self._copy_step_impl)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, workdir: str, step: int | None = None, **kw) -> "WorldModel":
        """A dynamics run folder -> WorldModel (its params; tokenizer/LAM params from the run
        folders its config names, or the co-trained LAM from its own checkpoint)."""
        run = Run(workdir, "dynamics run")
        cfg = run.config(stage="dynamics")
        stage = DynamicsStage(cfg)
        spec = {k: jax.ShapeDtypeStruct(s.shape, s.dtype) for k, s in stage.batch_spec(1).items()}
        abstract = abstract_variables(
            lambda b: stage.init(jax.random.PRNGKey(0), b)["params"], spec)
        meta = stage_meta("dynamics", {s: cfg[s] for s in stage.shape_sections})
        trained, _ = run.restore(abstract, expect_meta=meta, step=step)
        inputs = stage.frozen_inputs()
        frozen = load_frozen(inputs, {k: fi.abstract() for k, fi in inputs.items()})
        return cls(cfg, params={**frozen, **trained}, **kw)

    # ---- traced ----------------------------------------------------------------------------
    def _kv_cache(self, params, tokens_BMN, actions_BA):
        """Context pass: the temporal keys/values of every layer for buffer slots 0..M-2 (the
        logits head is dead code here and XLA drops it). The frame being made is at most slot
        M-1 and its own pass writes that slot, so the last slot is left out of the pass (1/M of
        its cost) and padded with zeros; causality keeps slots < M-1 exactly as a pass over the
        whole buffer would make them."""
        M = tokens_BMN.shape[1]
        _, cache = self.dynamics.apply({"params": params["dynamics"]}, tokens_BMN[:, :M - 1],
                                       actions_BA[:, :M - 2], fill_kv_cache=True,
                                       mutable=["kv_cache"])
        return jax.tree.map(lambda a: jnp.pad(a, [(0, 0), (0, 1)] + [(0, 0)] * (a.ndim - 2)),
                            cache["kv_cache"])

    def _full_logits(self, params, tokens_BMN, frame_BN, actions_BA, t):
        buf = jax.lax.dynamic_update_slice(tokens_BMN, frame_BN[:, None], (0, t, 0))
        logits = self.dynamics.apply({"params": params["dynamics"]}, buf, actions_BA)
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)

    def _prev(self, tokens_BMN, t):
        """Buffer frame t-1 for a copy_gate dynamics' one-frame pass (None otherwise)."""
        if not self.dynamics.copy_gate:
            return None
        return jax.lax.dynamic_index_in_dim(tokens_BMN, t - 1, axis=1, keepdims=False)

    def _frame_logits(self, params, kv_cache, frame_BN, actions_BA, t, prev_BN=None):
        """One-frame pass at buffer slot t against the cache -> logits [B,N,V]."""
        logits = self.dynamics.apply({"params": params["dynamics"], "kv_cache": kv_cache},
                                     frame_BN[:, None], actions_BA, kv_slot=t,
                                     prev_tokens_BN=prev_BN)
        return logits[:, 0]

    def _guided(self, logits_fa, actions_BA, t):
        """The guided log-probabilities of frame t (__init__), as frame -> [B,N,V].
        logits_fa(frame_XN, actions_XA) must take a batch of 2B: the B frames with their actions
        and the same B with "no action" run as one pass (one launch per layer, not two)."""
        B, w = actions_BA.shape[0], self.guidance
        no_action_BA = jax.lax.dynamic_update_slice(  # transition t-1 -> t: "no action"
            actions_BA, jnp.full((B, 1), -1, jnp.int32), (0, t - 1))
        actions_XA = jnp.concatenate([actions_BA, no_action_BA])

        def guided(frame_BN):
            logp_XNV = jax.nn.log_softmax(
                logits_fa(jnp.concatenate([frame_BN, frame_BN]), actions_XA), axis=-1)
            cond, uncond = logp_XNV[:B], logp_XNV[B:]
            return uncond + w * (cond - uncond)
        return guided

    def _decode_frame(self, params, tokens_BMN, t):
        safe = jnp.minimum(tokens_BMN, self.dynamics.num_codes - 1)  # mask slots are never read
        per_frame = self.tokenizer.temporal == "none"
        if per_frame:  # a per-frame tokenizer decodes frame t alone (1/M of the buffer's cost)
            safe = jax.lax.dynamic_slice_in_dim(safe, t, 1, axis=1)
        frames, _ = self.tokenizer.apply({"params": params["tokenizer"]}, safe,
                                         method=Tokenizer.decode, mutable=["vq_stats"])
        return jnp.clip(jax.lax.dynamic_index_in_dim(frames, 0 if per_frame else t, axis=1,
                                                     keepdims=False), 0, 1)

    def _code_vectors(self, params):
        """Every tokenizer code's vector [V, L] (what its decoder reads for that token)."""
        return self.tokenizer.apply({"params": params["tokenizer"]},
                                    jnp.arange(self.dynamics.num_codes),
                                    method=lambda m, c: m.vq.lookup(c))

    def _infer_impl(self, params, frames_BTHWC):
        tokens = lam_input_tokens(self.lam, self.tokenizer, params["tokenizer"], frames_BTHWC)
        return lam_actions(self.lam, params["lam"], frames_BTHWC, tokens)

    def _reset_impl(self, params, frames_BTHWC, actions_BA, rng):
        B, T0 = frames_BTHWC.shape[:2]
        M, mask_id = self.max_frames, self.dynamics.mask_id
        pad = jnp.zeros((B, M - T0, *frames_BTHWC.shape[2:]), frames_BTHWC.dtype)
        tokens = encode_tokens(self.tokenizer, params["tokenizer"],
                               jnp.concatenate([frames_BTHWC, pad], axis=1))  # causal: pad unseen
        tokens = tokens.at[:, T0:].set(mask_id).astype(jnp.int32)
        actions = jnp.full((B, M - 1), -1, jnp.int32).at[:, :T0 - 1].set(actions_BA)
        state = {"tokens": tokens, "actions": actions, "length": jnp.asarray(T0, jnp.int32),
                 "rng": rng}
        if self.rolling:  # slots >= T0 hold masked frames: never seen (masked, then overwritten)
            _, cache = self.dynamics.apply({"params": params["dynamics"]}, tokens, actions,
                                           fill_kv_cache=True, mutable=["kv_cache"])
            state["kv"] = jax.tree.map(lambda a: a.reshape(B, -1, *a.shape[1:]),
                                       cache["kv_cache"])
        return state

    def _slide_in(self, state, action_B):
        """The buffer made ready for the next frame: slid by one frame when full, the action of
        transition t-1 -> t written, frame t masked. -> (tokens, actions, t, full)."""
        M, mask_id = self.max_frames, self.dynamics.mask_id
        tokens, actions, length = state["tokens"], state["actions"], state["length"]
        full = length >= M
        tokens = jnp.where(full, jnp.roll(tokens, -1, axis=1), tokens)
        actions = jnp.where(full, jnp.roll(actions, -1, axis=1), actions)
        t = jnp.where(full, M - 1, length)             # index of the frame made now
        actions = jax.lax.dynamic_update_slice(
            actions, action_B.astype(jnp.int32)[:, None], (0, t - 1))  # transition t-1 -> t
        tokens = jax.lax.dynamic_update_slice(
            tokens, jnp.full((tokens.shape[0], 1, self.N), mask_id, jnp.int32), (0, t, 0))
        return tokens, actions, t, full

    def _copy_step_impl(self, params, state):
        tokens, actions, t, _ = self._slide_in(state, jnp.zeros(state["tokens"].shape[:1],
                                                                jnp.int32))
        last_BN = jax.lax.dynamic_index_in_dim(tokens, t - 1, axis=1, keepdims=False)
        tokens = jax.lax.dynamic_update_slice(tokens, last_BN[:, None], (0, t, 0))
        frame = self._decode_frame(params, tokens, t)
        return frame, {**state, "tokens": tokens, "actions": actions, "length": t + 1}

    def _step_impl(self, params, state, action_B):
        self.trace_count += 1  # Python side effect: runs once per trace (compile)
        tokens, actions, t, full = self._slide_in(state, action_B)
        rng, r_step = jax.random.split(state["rng"])
        B = tokens.shape[0]
        prev_BN = self._prev(tokens, t)
        # Frames < t are fixed during the MaskGIT steps: one context pass caches their temporal
        # keys/values (or the rolling cache has them), then each step runs frame t alone.
        if self.rolling:
            kv_cache = jax.tree.map(  # [B, N', M, K, E] -> [B*N', M, K, E], slid with the buffer
                lambda a: jnp.where(full, jnp.roll(a, -1, axis=2), a).reshape(-1, *a.shape[2:]),
                state["kv"])
        elif self.kv_cache:
            kv_cache = self._kv_cache(params, tokens, actions)
        guided = self.guidance != 1.0
        # Guidance runs each MaskGIT step on a batch of 2B, so what is shared is doubled once here.
        twice = (lambda tree: jax.tree.map(lambda a: jnp.concatenate([a, a]), tree)) if guided \
            else (lambda tree: tree)
        if self.rolling or self.kv_cache:
            kv_X, prev_XN = twice(kv_cache), twice(prev_BN)
            logits_fa = lambda f, a: self._frame_logits(params, kv_X, f, a, t,  # noqa: E731
                                                        prev_XN)
        else:  # reference path: the whole buffer at every MaskGIT step
            tokens_X = twice(tokens)
            logits_fa = lambda f, a: self._full_logits(params, tokens_X, f, a, t)  # noqa: E731
        if guided:
            logits_fn = self._guided(logits_fa, actions, t)
        else:
            logits_fn = lambda f: logits_fa(f, actions)  # noqa: E731
        frame_BN = maskgit_decode_frame(logits_fn, tokens.shape[0], self.N, r_step,
                                        mask_id=self.dynamics.mask_id, steps=self.steps,
                                        temperature=self.temperature, schedule=self.schedule,
                                        order=self.order, unroll=self.unroll,
                                        codes_VL=(self._code_vectors(params)
                                                  if self.pick == "mbr" else None))
        tokens = jax.lax.dynamic_update_slice(tokens, frame_BN[:, None], (0, t, 0))
        frame = self._decode_frame(params, tokens, t)
        new_state = {"tokens": tokens, "actions": actions, "length": t + 1, "rng": rng}
        if self.rolling:  # commit pass: the finished frame's keys/values into slot t
            _, cache = self.dynamics.apply(
                {"params": params["dynamics"], "kv_cache": kv_cache}, frame_BN[:, None], actions,
                kv_slot=t, prev_tokens_BN=prev_BN, mutable=["kv_cache"])
            new_state["kv"] = jax.tree.map(lambda a: a.reshape(B, -1, *a.shape[1:]),
                                           cache["kv_cache"])
        return frame, new_state

    # ---- public ----------------------------------------------------------------------------
    def reset(self, prompt_frames, prompt_actions=None, seed: int = 0) -> dict:
        """Start from prompt frames [B, T0, H, W, C] (uint8 or float in [0, 1]).

        prompt_actions [B, T0-1]: latent actions between the prompt frames; inferred with the LAM
        when None (and T0 > 1). Prompts longer than max_frames keep their last max_frames frames.
        """
        frames = jnp.asarray(prompt_frames)
        self.tokenizer.check_frames(frames)
        M = self.max_frames
        if frames.shape[1] > M:
            frames = frames[:, -M:]
            if prompt_actions is not None:
                prompt_actions = jnp.asarray(prompt_actions)[:, -(M - 1):]
        B, T0 = frames.shape[:2]
        if prompt_actions is None:
            prompt_actions = (self.infer_actions(frames) if T0 > 1
                              else jnp.zeros((B, 0), jnp.int32))
        prompt_actions = jnp.asarray(prompt_actions, jnp.int32)
        if prompt_actions.shape != (B, T0 - 1):
            raise UserError(f"prompt_actions must be [batch, prompt frames-1] = {(B, T0 - 1)}; "
                            f"got {tuple(prompt_actions.shape)}")
        return self._reset(self.params, frames, prompt_actions, jax.random.PRNGKey(seed))

    def step(self, state: dict, action) -> tuple[jax.Array, dict]:
        """Generate the next frame given the latent action (int [B] or a scalar for all).

        -> (frame float32 [B, H, W, C] in [0, 1], new state).
        """
        B = state["tokens"].shape[0]
        action_B = jnp.broadcast_to(jnp.asarray(action, jnp.int32), (B,))
        return self._step(self.params, state, action_B)

    def copy_step(self, state: dict) -> tuple[jax.Array, dict]:
        """The trivial world: the last frame's tokens again, decoded as `step` decodes (the
        baseline a dynamics must beat: `genie-jax eval`'s repeat_last_tokens). The state it
        returns serves further copy steps only (a rolling cache is not advanced)."""
        return self._copy_step(self.params, state)

    def infer_actions(self, frames_BTHWC) -> jax.Array:
        """Latent action codes [B, T-1] of a real clip, from the LAM."""
        if "lam" not in self.params:
            raise UserError("this WorldModel has no LAM params; cannot infer latent actions")
        return self._infer(self.params, jnp.asarray(frames_BTHWC))


def rollout(wm: WorldModel, prompt_frames, actions_BS, prompt_actions=None,
            seed: int = 0) -> jax.Array:
    """Generate one frame per given action: -> float32 [B, S, H, W, C] in [0, 1]."""
    state = wm.reset(prompt_frames, prompt_actions, seed=seed)
    actions_BS = jnp.asarray(actions_BS, jnp.int32)
    out = []
    for s in range(actions_BS.shape[1]):
        frame, state = wm.step(state, actions_BS[:, s])
        out.append(frame)
    return jnp.stack(out, axis=1)


def infer_actions(wm: WorldModel, frames_BTHWC) -> jax.Array:
    """Latent actions [B, T-1] of a real clip (the LAM's codes)."""
    return wm.infer_actions(frames_BTHWC)
