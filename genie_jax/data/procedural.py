"""Built-in procedural video: a controllable sprite, bouncing sprites, a scrolling landscape.

Every episode is a pure function of (seed, split, episode id), so the dataset needs no files,
is identical on every host, and its splits never share an episode. Frames are rendered on demand
for just the requested window. True actions are recorded (the player sprite follows a sticky
random policy), so controllability metrics can be checked against them later.

Actions (transition t -> t+1): 0 noop, 1 left, 2 right, 3 up, 4 down.
"""
from __future__ import annotations

import functools

import numpy as np

NUM_ACTIONS = 5
ACTION_NAMES = ("NOOP", "LEFT", "RIGHT", "UP", "DOWN")  # screen directions of the player
_MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)  # (dx, dy)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# A fixed retro palette, as games reuse a small set of assets: every colour on screen is one of
# these, which is what makes a 1024-code tokenizer able to reconstruct frames near-losslessly.
PALETTE = np.array([
    [0.09, 0.09, 0.16], [0.95, 0.95, 0.92], [0.85, 0.20, 0.22], [0.98, 0.65, 0.15],
    [0.99, 0.90, 0.30], [0.30, 0.75, 0.30], [0.10, 0.45, 0.25], [0.35, 0.65, 0.95],
    [0.15, 0.30, 0.70], [0.60, 0.35, 0.80], [0.55, 0.40, 0.25], [0.60, 0.60, 0.62],
], dtype=np.float32)


def _bounce(p0: np.ndarray, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Positions of a point moving at constant velocity, reflected inside [lo, hi]."""
    span = hi - lo
    q = np.mod(p0 - lo + v, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


class ProceduralVideo:
    """EpisodeSource of procedurally rendered episodes (see module docstring)."""

    has_actions = True

    def __init__(self, split: str = "train", num_episodes: int = 64, episode_length: int = 64,
                 resolution: int = 32, num_sprites: int = 2, seed: int = 0, sticky: float = 0.8):
        if split not in _SPLIT_IDS:
            raise ValueError(f"data.split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        if resolution < 8:
            raise ValueError(f"data.resolution must be >= 8, got {resolution}")
        self.split, self.num_episodes, self.episode_length = split, num_episodes, episode_length
        self.resolution, self.num_sprites, self.seed, self.sticky = (
            resolution, num_sprites, seed, sticky)
        self.frame_shape = (resolution, resolution, 3)
        ys, xs = np.mgrid[0:resolution, 0:resolution]
        self._ys, self._xs = ys.astype(np.float32), xs.astype(np.float32)

    def episode_lengths(self) -> np.ndarray:
        return np.full(self.num_episodes, self.episode_length, dtype=np.int64)

    @functools.lru_cache(maxsize=4096)
    def _episode(self, episode: int) -> dict:
        if not 0 <= episode < self.num_episodes:
            raise IndexError(f"episode {episode} out of range [0, {self.num_episodes})")
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], episode])
        R, T = self.resolution, self.episode_length
        size = max(2, R // 8)
        # Sky, ground, player, then one colour per sprite: all distinct palette entries.
        palette = PALETTE[rng.permutation(len(PALETTE))[:4 + self.num_sprites]]
        # Player: sticky random policy; position integrates the chosen moves, clipped to the frame.
        actions = np.empty(T, dtype=np.int32)
        a = rng.integers(NUM_ACTIONS)
        for t in range(T):
            if rng.random() > self.sticky:
                a = rng.integers(NUM_ACTIONS)
            actions[t] = a
        speed = max(1.0, R / 32)
        start = rng.uniform(size, R - 2 * size, size=2)
        steps = np.concatenate([[[0.0, 0.0]], _MOVES[actions[:-1]] * speed])
        player = np.empty((T, 2))
        pos = start.copy()
        for t in range(T):
            pos = np.clip(pos + steps[t], 0, R - size)
            player[t] = pos
        t = np.arange(T)[:, None]
        sprites = [
            _bounce(rng.uniform(0, R - size, 2), rng.uniform(-1.5, 1.5, 2) * speed * t, 0, R - size)
            for _ in range(self.num_sprites)
        ]
        return dict(
            palette=palette,
            hill_phase=rng.uniform(0, 2 * np.pi),
            hill_period=rng.uniform(0.6, 1.4) * R,
            hill_level=rng.uniform(0.6, 0.8) * R,
            scroll=rng.uniform(-1.0, 1.0) * speed,
            size=size,
            player=np.round(player).astype(np.int32),
            sprites=[np.round(s).astype(np.int32) for s in sprites],
            actions=actions,
        )

    def read_window(self, episode: int, start: int, length: int) -> dict[str, np.ndarray]:
        if start < 0 or start + length > self.episode_length:
            raise IndexError(f"window [{start}, {start + length}) outside episode of "
                             f"{self.episode_length} frames")
        ep = self._episode(int(episode))
        t = np.arange(start, start + length, dtype=np.float32)[:, None, None]
        R, pal, size = self.resolution, ep["palette"], ep["size"]
        if self.num_sprites + 4 > len(PALETTE):
            raise ValueError(f"data.num_sprites must be <= {len(PALETTE) - 4}")
        ys, xs = self._ys[None], self._xs[None]
        sky = np.broadcast_to(pal[0], (1, R, R, 3))
        ground_y = ep["hill_level"] + 0.12 * R * np.sin(
            2 * np.pi * (xs + ep["scroll"] * t) / ep["hill_period"] + ep["hill_phase"])
        frames = np.where((ys >= ground_y)[..., None], pal[2], sky)
        for k, traj in enumerate(ep["sprites"]):
            frames = _paint_box(frames, traj[start:start + length], size, pal[4 + k])
        frames = _paint_box(frames, ep["player"][start:start + length], size, pal[3])
        frames = np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)
        return {"frames": frames, "actions": ep["actions"][start:start + length].copy()}


def _paint_box(frames: np.ndarray, xy_T2: np.ndarray, size: int, color: np.ndarray) -> np.ndarray:
    T, H, W, _ = frames.shape
    ys, xs = np.arange(H), np.arange(W)
    x0, y0 = xy_T2[:, 0, None], xy_T2[:, 1, None]
    in_x = (xs[None] >= x0) & (xs[None] < x0 + size)
    in_y = (ys[None] >= y0) & (ys[None] < y0 + size)
    mask = (in_y[:, :, None] & in_x[:, None, :])[..., None]
    return np.where(mask, color, frames)
