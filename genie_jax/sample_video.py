"""`genie-jax sample`: roll a dynamics run out from a held-out prompt and write a GIF or MP4.

Either a given action sequence (`--actions=RIGHT,RIGHT,UP` with the run's action map, see
genie_jax/action_map.py, or raw latent ids `--actions=0,3,1`; prompt = the first K frames of
held-out episode `prompt_episode`) or the actions the LAM infers from held-out episode
`from_clip` (then the video shows the real clip and the rollout side by side).
"""
from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from genie_jax import media
from genie_jax.errors import UserError


def parse_actions(text: str, num_actions: int, workdir: str | None = None) -> list[int]:
    """'RIGHT,RIGHT,UP' (the run's action map; see genie_jax/action_map.py) or raw latent ids
    '0,3,1' -> latent ids; one-line UserError for unknown names or ids outside [0, A)."""
    from genie_jax.action_map import ActionMap, load_action_map
    amap = load_action_map(workdir, num_actions) if workdir else ActionMap.numbered(num_actions)
    return amap.parse(text)


@dataclasses.dataclass
class SampleSettings:
    out: str
    actions: str | None = None
    from_clip: int | None = None
    prompt_frames: int = 1
    frames: int = 15            # --from_clip: frames to generate (capped by the episode)
    prompt_episode: int = 0     # --actions: held-out episode giving the prompt
    split: str = "test"
    steps: int | None = None
    temperature: float | None = None
    pick: str | None = None     # 'sample' | 'mbr' (default: the run's sampling.pick)
    guidance: float | None = None  # action guidance (default: the run's sampling.guidance)
    seed: int = 0
    fps: float = 8.0
    scale: int = 0              # 0: automatic (shorter side about 256 px)
    step: int | None = None


def check_settings(s: SampleSettings) -> None:
    ext = os.path.splitext(s.out)[1].lower()
    if ext not in media.VIDEO_EXTS:
        raise UserError(f"--out must end in .gif or .mp4; got {s.out!r}")
    if (s.actions is None) == (s.from_clip is None):
        raise UserError("sample needs exactly one of --actions=RIGHT,UP,... (or latent ids 0,3,1) "
                        "or --from_clip=EPISODE")
    if s.prompt_frames < 1:
        raise UserError(f"--prompt_frames must be >= 1; got {s.prompt_frames}")
    if s.split == "train":
        raise UserError("prompts come from held-out data: --split must not be 'train'")
    if s.fps <= 0:
        raise UserError(f"--fps must be > 0; got {s.fps}")


def _read(source, episode: int, length: int, what: str) -> np.ndarray:
    lengths = source.episode_lengths()
    if not 0 <= episode < len(lengths):
        raise UserError(f"{what}={episode} is not an episode of the held-out split "
                        f"(it has {len(lengths)}: 0..{len(lengths) - 1})")
    n = int(lengths[episode])
    if n < length:
        raise UserError(f"episode {episode} has {n} frames; {length} are needed")
    return np.asarray(source.read_window(episode, 0, length)["frames"], np.uint8)


def sample(workdir: str, s: SampleSettings, log=print) -> dict:
    """-> {'path', 'actions', 'prompt_frames', 'generated', ...}; writes s.out."""
    from genie_jax.evaluation import infer_actions_windowed, load_world_model, open_heldout
    from genie_jax.sampling import rollout
    from genie_jax.runs import Run
    check_settings(s)
    cfg = Run(workdir).config(stage="dynamics")
    from genie_jax.action_map import load_action_map
    amap = load_action_map(workdir, int(cfg.model.num_actions))
    K = s.prompt_frames
    actions = amap.parse(s.actions) if s.actions is not None else None  # before loading
    wm = load_world_model(workdir, steps=s.steps, temperature=s.temperature, step=s.step,
                          pick=s.pick, guidance=s.guidance)
    source = open_heldout(cfg, s.split)
    real = None
    if actions is not None:
        prompt = _read(source, s.prompt_episode, K, "--prompt_episode")[None]
        prompt_actions = None  # inferred by the LAM from the prompt when K > 1
    else:
        n = int(source.episode_lengths()[s.from_clip]) if 0 <= s.from_clip < len(
            source.episode_lengths()) else K + 1
        S = max(1, min(s.frames, n - K))
        clip = _read(source, s.from_clip, K + S, "--from_clip")[None]
        window = max(2, min(int(cfg.data.num_frames), wm.lam.max_frames, K + S))
        codes = infer_actions_windowed(wm.infer_actions, jnp.asarray(clip), window)[0]
        actions = [int(a) for a in codes[K - 1:]]
        prompt, prompt_actions, real = clip[:, :K], codes[None, :K - 1], clip[0]
    out = np.asarray(rollout(wm, jnp.asarray(prompt), [actions], prompt_actions, seed=s.seed)[0])
    H, W = prompt.shape[2:4]
    scale = s.scale or media.auto_scale(H, W)
    video = media.upscale(np.concatenate([media.to_uint8(prompt[0]),
                                          media.to_uint8(out)]), scale)
    if real is not None:  # real clip | prompt + rollout
        video = media.hstack([media.upscale(media.to_uint8(real), scale), video], gap=4)
    path = media.write_video(s.out, video, fps=s.fps)
    return {"path": path, "actions": actions, "action_names": [amap.name_of(a) for a in actions],
            "prompt_frames": K, "generated": len(out),
            "scale": scale, "side_by_side": real is not None, "compiles": int(wm.trace_count)}
