"""The model side of `genie-jax play`, free of any web code.

`PlayEngine` holds the one WorldModel (loaded and compiled once) that every session shares;
`PlaySession` is one browser tab's world: its own state, the frames so far (for step-back and
download) and its latency figures. Calls into the model are blocking; the server runs them in a
worker thread, one at a time.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import secrets
import statistics
import time
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax import media
from genie_jax.action_map import ActionMap
from genie_jax.errors import UserError


def png_bytes(frame_HWC: np.ndarray) -> bytes:
    from PIL import Image
    a = media.to_uint8(frame_HWC)
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(frame_HWC: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(frame_HWC)).decode("ascii")


def replicate_state(state: dict, copies: int) -> dict:
    """A batch-1 sampler state -> the same state `copies` times over its batch axis. Leaves with
    a leading batch axis of 1 are repeated; the rest (frame count, rng key) are shared."""
    return jax.tree.map(
        lambda x: jnp.repeat(x, copies, axis=0) if x.ndim and x.shape[0] == 1 else x, state)


class PlayEngine:
    """One WorldModel for all sessions; frames come back as uint8 numpy [.., H, W, C]."""

    def __init__(self, wm, action_map: ActionMap, prompt_frames: int = 1):
        self.wm = wm
        self.action_map = action_map
        self.num_actions = int(wm.dynamics.num_actions)
        self.image_size = tuple(int(s) for s in wm.tokenizer.image_size)
        self.channels = int(wm.tokenizer.channels)
        self.prompt_frames = int(prompt_frames)

    def warm_up(self, prompt_THWC: np.ndarray) -> float:
        """Compile reset (this prompt length and a single image), step and the gallery's batched
        step before the first visitor; -> seconds taken."""
        t0 = time.perf_counter()
        state = self.reset(prompt_THWC, seed=0)
        self.step(state, 0)
        self.gallery(state)
        if prompt_THWC.shape[0] != 1:
            self.reset(prompt_THWC[-1:], seed=0)
        return time.perf_counter() - t0

    def reset(self, prompt_THWC: np.ndarray, seed: int) -> dict:
        state = self.wm.reset(np.asarray(prompt_THWC, np.uint8)[None], seed=int(seed))
        return jax.block_until_ready(state)

    def step(self, state: dict, latent: int) -> tuple[np.ndarray, dict]:
        """One WorldModel.step for one latent action -> (uint8 [H, W, C], new state)."""
        if not 0 <= int(latent) < self.num_actions:
            raise UserError(f"latent action {latent} outside [0, {self.num_actions})")
        frame, state = self.wm.step(state, jnp.asarray([int(latent)], jnp.int32))
        return media.to_uint8(np.asarray(frame))[0], state

    def gallery(self, state: dict) -> np.ndarray:
        """The next frame for every latent action from `state`: ONE batched step over A copies
        of the state -> uint8 [A, H, W, C]."""
        A = self.num_actions
        frames, _ = self.wm.step(replicate_state(state, A), jnp.arange(A, dtype=jnp.int32))
        return media.to_uint8(np.asarray(frames))


@dataclasses.dataclass
class Entry:
    state: dict
    frame: np.ndarray            # uint8 [H, W, C]
    action: str | None = None    # control that made this frame (None for a prompt frame)


class PlaySession:
    """One tab: its own sampler state and history. Not thread-safe; the server serialises."""

    def __init__(self, engine: PlayEngine, seed: int, number: int = 0, max_history: int = 1000):
        self.engine = engine
        self.number = int(number)            # the n-th session of this server: seeds its prompts
        self.id = secrets.token_urlsafe(12)  # also the download URL's key: not guessable
        self.seed = int(seed)
        self.resets = 0
        self.max_history = int(max_history)
        self.prompt: list[np.ndarray] = []   # prompt frames shown before the first step
        self.history: list[Entry] = []       # the newest entry is the current state
        self.prompt_info = ""
        self.step_ms: deque[float] = deque(maxlen=200)
        self.last_active = time.monotonic()

    # ---- actions ------------------------------------------------------------------------------
    def reset(self, prompt_THWC: np.ndarray, info: str) -> np.ndarray:
        key = np.random.SeedSequence([self.seed, self.number, self.resets]).generate_state(1)[0]
        state = self.engine.reset(prompt_THWC, seed=int(key) % 2**31)
        self.resets += 1
        self.prompt = [np.asarray(f, np.uint8) for f in prompt_THWC[:-1]]
        self.history = [Entry(state, np.asarray(prompt_THWC[-1], np.uint8))]
        self.prompt_info = info
        return self.history[-1].frame

    def step(self, latent: int, name: str) -> np.ndarray:
        self._need_state()
        t0 = time.perf_counter()
        frame, state = self.engine.step(self.history[-1].state, latent)
        self.step_ms.append((time.perf_counter() - t0) * 1e3)
        self.history.append(Entry(state, frame, name))
        if len(self.history) > self.max_history:  # memory stays bounded; oldest frames leave
            self.prompt.append(self.history.pop(0).frame)
            self.prompt = self.prompt[-self.max_history:]
        return frame

    def back(self) -> np.ndarray:
        self._need_state()
        if len(self.history) < 2:
            raise UserError("nothing to step back to: this is the prompt frame")
        self.history.pop()
        return self.history[-1].frame

    def gallery(self) -> np.ndarray:
        self._need_state()
        return self.engine.gallery(self.history[-1].state)

    def _need_state(self) -> None:
        if not self.history:
            raise UserError("no prompt yet: reset first")

    # ---- views ------------------------------------------------------------------------------
    @property
    def frames_generated(self) -> int:
        return len(self.history) - 1

    def video(self) -> np.ndarray:
        """Prompt and generated frames so far: uint8 [T, H, W, C]."""
        self._need_state()
        return np.stack(self.prompt + [e.frame for e in self.history])

    def latency(self) -> dict:
        ms = list(self.step_ms)
        return {"step_ms": round(ms[-1], 1) if ms else None,
                "step_ms_p50": round(statistics.median(ms), 1) if ms else None}

    def touch(self) -> None:
        self.last_active = time.monotonic()
