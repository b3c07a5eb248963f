"""Interactive sampling from a trained dynamics run: one frame per call, action chosen each step.

    wm = WorldModel.load("runs/dyn")              # dynamics run + the tokenizer/LAM it names
    state = wm.reset(prompt_frames, seed=0)       # uint8/float [B, T0, H, W, C]
    frame, state = wm.step(state, action)         # action: int [B] latent action id
    frames = rollout(wm, prompt_frames, actions)  # actions [B, S] given up front
    codes = infer_actions(wm, clip)               # LAM latent actions [B, T-1] of a real clip

Cost per frame: one context pass over the buffer caches the temporal keys/values of frames < t
(causality: they cannot change), then each MaskGIT step runs the transformer on frame t alone,
so a step costs about (M + steps) frame-passes rather than M * steps.

Fixed shapes: the state holds a token buffer of `max_frames` frames [B, M, N], the actions of
the transitions between them [B, M-1], the number of valid frames `length` and the rng. Each step
writes the action for transition (length-1 -> length), MaskGIT-decodes frame `length` (the
dynamics is causal in time, so buffer slots after it do not matter), and decodes that frame with
the tokenizer. When the buffer is full it slides by one frame first. So `step` compiles once
(`trace_count` counts its traces) whatever the number of steps.

MaskGIT decoding: start with every token of the new frame masked; at each of `steps` steps sample
all masked tokens (temperature), keep the most confident and re-mask the rest, so that after step
s a fraction gamma((s+1)/steps) of the frame is still masked (gamma: cosine by default, 0 at the
end: every token is decoded by the last step). Reproducible: the rng lives in the state.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.errors import UserError
from genie_jax.models.tokenizer import Tokenizer
from genie_jax.stages.dynamics import DynamicsStage, encode_tokens, lam_actions
from genie_jax.train.frozen import expected_meta, load_params, read_run_config
from genie_jax.train.trainer import strip_boxes

SCHEDULES = ("cosine", "linear", "square")


def mask_ratio(schedule: str, r):
    """Fraction of tokens still masked after progress r in [0, 1]; 1 at r=0, 0 at r=1."""
    if schedule == "cosine":
        return np.cos(0.5 * np.pi * r)
    if schedule == "linear":
        return 1.0 - r
    if schedule == "square":
        return 1.0 - r ** 2
    raise ValueError(f"sampling schedule must be one of {SCHEDULES}; got {schedule!r}")


def masked_counts(num_tokens: int, steps: int, schedule: str = "cosine") -> list[int]:
    """Tokens still masked after each MaskGIT step (static). Non-increasing, ends at 0, and at
    least one token is unmasked per step."""
    out, left = [], num_tokens
    for s in range(steps):
        n = int(math.floor(num_tokens * float(mask_ratio(schedule, (s + 1) / steps)) + 1e-6))
        n = 0 if s == steps - 1 else min(n, left - 1)
        left = max(n, 0)
        out.append(left)
    return out


def maskgit_decode_frame(logits_fn, batch: int, num_tokens: int, rng, *, mask_id: int,
                         steps: int, temperature: float, schedule: str):
    """Decode one frame by MaskGIT. logits_fn(frame tokens [B,N], mask_id where masked) ->
    logits [B,N,V]. -> tokens [B,N] (no mask_id left)."""
    B, N = batch, num_tokens
    counts = jnp.asarray(masked_counts(N, steps, schedule), jnp.int32)

    def body(s, carry):
        frame_BN, masked_BN = carry
        logits_BNV = logits_fn(frame_BN)
        r_sample, r_choice = jax.random.split(jax.random.fold_in(rng, s))
        if temperature > 0:
            sampled_BN = jax.random.categorical(r_sample, logits_BNV / temperature, axis=-1)
        else:
            sampled_BN = jnp.argmax(logits_BNV, axis=-1)
        logp_BNV = jax.nn.log_softmax(logits_BNV, axis=-1)
        conf_BN = jnp.take_along_axis(logp_BNV, sampled_BN[..., None], axis=-1)[..., 0]
        if temperature > 0:  # MaskGIT: randomise the choice of kept tokens, less so later on
            anneal = temperature * (1.0 - (s + 1.0) / steps)
            conf_BN = conf_BN + anneal * jax.random.gumbel(r_choice, conf_BN.shape)
        sampled_BN = jnp.where(masked_BN, sampled_BN.astype(jnp.int32), frame_BN)
        conf_BN = jnp.where(masked_BN, conf_BN, jnp.inf)  # decided tokens stay decided
        rank_BN = jnp.argsort(jnp.argsort(conf_BN, axis=-1), axis=-1)
        new_masked_BN = rank_BN < counts[s]
        return jnp.where(new_masked_BN, mask_id, sampled_BN), new_masked_BN

    init = (jnp.full((B, N), mask_id, jnp.int32), jnp.ones((B, N), bool))
    frame_BN, _ = jax.lax.fori_loop(0, steps, body, init)
    return frame_BN


class WorldModel:
    def __init__(self, config, params: dict, *, steps: int | None = None,
                 temperature: float | None = None, schedule: str | None = None,
                 max_frames: int | None = None, kv_cache: bool = True):
        """params: {'dynamics', 'tokenizer', 'lam' (optional: needed for inferring actions)}.
        kv_cache=False re-runs the whole buffer at every MaskGIT step (the slow reference)."""
        self.kv_cache = bool(kv_cache)
        self.config = config
        stage = DynamicsStage(config)
        # remat only saves training memory; the sampler's passes are forward-only.
        self.dynamics = stage.model.clone(remat=False)
        self.tokenizer, self.lam = stage.tokenizer, stage.lam
        self.params = params
        sc = config.get("sampling", {})
        self.steps = int(steps if steps is not None else sc.get("steps", 8))
        self.temperature = float(temperature if temperature is not None else
                                 sc.get("temperature", 1.0))
        self.schedule = schedule or sc.get("schedule", "cosine")
        mask_ratio(self.schedule, 0.0)  # validates the name
        M = int(max_frames or sc.get("max_frames", 0) or config.data.num_frames)
        limit = min(self.dynamics.max_frames, self.tokenizer.max_frames)
        if not 2 <= M <= limit:
            raise UserError(f"sampling max_frames={M} must be in [2, {limit}] (the dynamics' and "
                            f"tokenizer's model.max_frames)")
        if self.steps < 1:
            raise UserError(f"sampling steps must be >= 1; got {self.steps}")
        self.max_frames = M
        self.N = self.dynamics.tokens_per_frame
        self.trace_count = 0
        self._step = jax.jit(self._step_impl)
        self._reset = jax.jit(self._reset_impl)
        self._infer = jax.jit(self._infer_impl)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, workdir: str, step: int | None = None, **kw) -> "WorldModel":
        """A dynamics run folder -> WorldModel (its params; tokenizer/LAM params from the run
        folders its config names, or the co-trained LAM from its own checkpoint)."""
        cfg = read_run_config(workdir)
        if cfg.get("stage") != "dynamics":
            raise UserError(f"{workdir} is a {cfg.get('stage')!r} run, not a dynamics run")
        stage = DynamicsStage(cfg)
        spec = stage.batch_spec(1)
        boxed = jax.eval_shape(lambda b: stage.init(jax.random.PRNGKey(0), b)["params"],
                               {k: jax.ShapeDtypeStruct(s.shape, s.dtype) for k, s in spec.items()})
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one),
                                strip_boxes(boxed))
        meta = expected_meta("dynamics", {s: cfg[s] for s in stage.shape_sections})
        trained, _ = load_params(workdir, abstract, meta, step=step, what="dynamics run")
        params = {**stage.frozen_params(), **trained}
        return cls(cfg, params, **kw)

    # ---- traced ----------------------------------------------------------------------------
    def _kv_cache(self, params, tokens_BMN, actions_BA):
        """Context pass over the buffer: the temporal keys/values of every layer (the logits
        head is dead code here and XLA drops it)."""
        _, cache = self.dynamics.apply({"params": params["dynamics"]}, tokens_BMN, actions_BA,
                                       fill_kv_cache=True, mutable=["kv_cache"])
        return cache["kv_cache"]

    def _full_logits(self, params, tokens_BMN, frame_BN, actions_BA, t):
        buf = jax.lax.dynamic_update_slice(tokens_BMN, frame_BN[:, None], (0, t, 0))
        logits = self.dynamics.apply({"params": params["dynamics"]}, buf, actions_BA)
        return jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)

    def _frame_logits(self, params, kv_cache, frame_BN, actions_BA, t):
        """One-frame pass at buffer slot t against the cache -> logits [B,N,V]."""
        logits = self.dynamics.apply({"params": params["dynamics"], "kv_cache": kv_cache},
                                     frame_BN[:, None], actions_BA, kv_slot=t)
        return logits[:, 0]

    def _decode_frame(self, params, tokens_BMN, t):
        safe = jnp.minimum(tokens_BMN, self.dynamics.num_codes - 1)  # mask slots are never read
        frames, _ = self.tokenizer.apply({"params": params["tokenizer"]}, safe,
                                         method=Tokenizer.decode, mutable=["vq_stats"])
        return jnp.clip(jax.lax.dynamic_index_in_dim(frames, t, axis=1, keepdims=False), 0, 1)

    def _infer_impl(self, params, frames_BTHWC):
        return lam_actions(self.lam, params["lam"], frames_BTHWC)

    def _reset_impl(self, params, frames_BTHWC, actions_BA, rng):
        B, T0 = frames_BTHWC.shape[:2]
        M, mask_id = self.max_frames, self.dynamics.mask_id
        pad = jnp.zeros((B, M - T0, *frames_BTHWC.shape[2:]), frames_BTHWC.dtype)
        tokens = encode_tokens(self.tokenizer, params["tokenizer"],
                               jnp.concatenate([frames_BTHWC, pad], axis=1))  # causal: pad unseen
        tokens = tokens.at[:, T0:].set(mask_id).astype(jnp.int32)
        actions = jnp.full((B, M - 1), -1, jnp.int32).at[:, :T0 - 1].set(actions_BA)
        return {"tokens": tokens, "actions": actions, "length": jnp.asarray(T0, jnp.int32),
                "rng": rng}

    def _step_impl(self, params, state, action_B):
        self.trace_count += 1  # Python side effect: runs once per trace (compile)
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
        rng, r_step = jax.random.split(state["rng"])
        # Frames < t are fixed during the MaskGIT steps: one context pass caches their temporal
        # keys/values, then each step runs the transformer on frame t alone.
        if self.kv_cache:
            kv_cache = self._kv_cache(params, tokens, actions)
            logits_fn = lambda f: self._frame_logits(params, kv_cache, f, actions, t)  # noqa: E731
        else:  # reference path: the whole buffer at every MaskGIT step
            logits_fn = lambda f: self._full_logits(params, tokens, f, actions, t)  # noqa: E731
        frame_BN = maskgit_decode_frame(logits_fn, tokens.shape[0], self.N, r_step,
                                        mask_id=mask_id, steps=self.steps,
                                        temperature=self.temperature, schedule=self.schedule)
        tokens = jax.lax.dynamic_update_slice(tokens, frame_BN[:, None], (0, t, 0))
        frame = self._decode_frame(params, tokens, t)
        return frame, {"tokens": tokens, "actions": actions, "length": t + 1, "rng": rng}

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
