"""`genie-jax sample`: a rollout of a dynamics run as a GIF or MP4 (see genie_jax/sample_video.py).

  genie-jax sample --workdir=runs/dyn --out=rollout.gif --actions=RIGHT,RIGHT,UP [--prompt_frames=1]
  genie-jax sample --workdir=runs/dyn --out=rollout.gif --actions=0,3,1,1,2   (raw latent ids)
  genie-jax sample --workdir=runs/dyn --out=clip.mp4 --from_clip=3 [--frames=15]
      [--steps=S --temperature=X --pick=sample|mbr --guidance=W --seed=N --split=test --fps=8
       --scale=4]
"""
from __future__ import annotations


from absl import flags

from genie_jax.commands.common import DecodingFlags, quiet_logging, run_command
from genie_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "a dynamics run folder")
_OUT = flags.DEFINE_string("out", None, "output video: FILE.gif or FILE.mp4")
_ACTIONS = flags.DEFINE_string("actions", None, "actions by name from the run's action map "
                                "(genie-jax actions show), e.g. RIGHT,RIGHT,UP, or latent ids 0,3,1")
_FROM_CLIP = flags.DEFINE_integer("from_clip", None,
                                  "held-out episode whose LAM-inferred actions drive the rollout")
_PROMPT = flags.DEFINE_integer("prompt_frames", 1, "real frames given as the prompt")
_FRAMES = flags.DEFINE_integer("frames", 15, "--from_clip: frames to generate")
_PROMPT_EP = flags.DEFINE_integer("prompt_episode", 0, "--actions: held-out episode of the prompt")
_SPLIT = flags.DEFINE_string("split", "test", "held-out split the prompt comes from (not train)")
_DECODING = DecodingFlags()
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_FPS = flags.DEFINE_float("fps", 8.0, "frames per second of the video")
_SCALE = flags.DEFINE_integer("scale", 0, "nearest-neighbour upscale factor (0: automatic)")
_CKPT = flags.DEFINE_integer("checkpoint_step", None, "checkpoint step (default: newest)")


def main(argv):
    del argv
    quiet_logging()
    if not _WORKDIR.value or not _OUT.value:
        raise UserError("sample needs --workdir=DIR (a dynamics run) and --out=FILE.gif|.mp4")
    from genie_jax.sample_video import SampleSettings, sample
    s = SampleSettings(out=_OUT.value, actions=_ACTIONS.value, from_clip=_FROM_CLIP.value,
                       prompt_frames=_PROMPT.value, frames=_FRAMES.value,
                       prompt_episode=_PROMPT_EP.value, split=_SPLIT.value, seed=_SEED.value,
                       fps=_FPS.value, scale=_SCALE.value, step=_CKPT.value,
                       **_DECODING.values())
    r = sample(_WORKDIR.value, s)
    print(f"wrote {r['path']}: {r['prompt_frames']} prompt + {r['generated']} generated frames "
          f"(x{r['scale']}{', real | generated' if r['side_by_side'] else ''}); "
          f"actions {_actions_text(r)}", flush=True)


def _actions_text(r: dict) -> str:
    ids = ",".join(map(str, r["actions"]))
    names = ",".join(r["action_names"])
    return ids if names == ids else f"{names} (latent {ids})"


def run(argv: list[str]) -> None:
    run_command(main, argv)
