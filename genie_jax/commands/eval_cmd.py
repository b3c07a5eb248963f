"""`genie-jax eval`: held-out metrics of a dynamics run (see genie_jax/evaluation.py).

  genie-jax eval --workdir=runs/dyn [--out=runs/dyn/eval] [--episodes=32] [--clips_per_episode=1]
      [--rollout_frames=10]
      [--prompt_frames=1] [--seed=0] [--split=test] [--steps=S] [--temperature=X]
      [--pick=sample|mbr --guidance=W]

Writes eval.json, psnr_per_step.png, rollouts.png and rollouts.gif into --out.
"""
from __future__ import annotations

import math
import os

from absl import flags

from genie_jax.commands.common import DecodingFlags, quiet_logging, run_command
from genie_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "a dynamics run folder")
_OUT = flags.DEFINE_string("out", None, "output folder (default WORKDIR/eval)")
_EPISODES = flags.DEFINE_integer("episodes", 32, "held-out episodes (one clip each)")
_CLIPS = flags.DEFINE_integer("clips_per_episode", 1, "non-overlapping clips per episode")
_ROLLOUT = flags.DEFINE_integer("rollout_frames", 10, "frames generated per clip")
_PROMPT = flags.DEFINE_integer("prompt_frames", 1, "real frames given as the prompt")
_SEED = flags.DEFINE_integer("seed", 0, "clip starts, random actions and sampling")
_SPLIT = flags.DEFINE_string("split", "test", "held-out split of the run's data (not train)")
_BATCH = flags.DEFINE_integer("batch_size", 8, "clips rolled out at once")
_DECODING = DecodingFlags()
_DELTA_T = flags.DEFINE_integer("delta_t", 4, "generated frame at which delta-PSNR is reported")
_CKPT = flags.DEFINE_integer("checkpoint_step", None, "checkpoint step (default: newest)")


def main(argv):
    del argv
    quiet_logging()
    if not _WORKDIR.value:
        raise UserError("eval needs --workdir=DIR (a dynamics run)")
    from genie_jax.evaluation import EvalSettings, evaluate, write_outputs
    settings = EvalSettings(episodes=_EPISODES.value, clips_per_episode=_CLIPS.value,
                            rollout_frames=_ROLLOUT.value,
                            prompt_frames=_PROMPT.value, seed=_SEED.value, split=_SPLIT.value,
                            batch_size=_BATCH.value, delta_t=_DELTA_T.value, step=_CKPT.value,
                            **_DECODING.values())
    results, artifacts = evaluate(_WORKDIR.value, settings, log=lambda m: print(m, flush=True))
    out = _OUT.value or os.path.join(_WORKDIR.value, "eval")
    paths = write_outputs(out, results, artifacts)
    r = results
    nmi = r["action_nmi"]
    nmi_txt = ("" if nmi is None else f"; action NMI {_fmt(nmi['nmi'])}"
               + (f" (CoinRun classes {_fmt(nmi.get('class_nmi'))})" if "class_nmi" in nmi else ""))
    probe = r.get("action_probe")
    probe_txt = "" if probe is None else (f"; probe accuracy {_fmt(probe['accuracy'])} "
                                          f"(chance {_fmt(probe['chance'])})")
    true = r.get("true_actions")
    t = r['controllability']['t']
    true_txt = "" if true is None else (f"; true actions ({true['source']}, {true['clips']} "
                                        f"clips) PSNR {true['psnr']:.2f}, delta-PSNR@{t} "
                                        f"{_fmt(true['delta_psnr'])}"
                                        + ("" if true.get("delta_psnr_shuffled") is None else
                                           f" (against shuffled actions "
                                           f"{_fmt(true['delta_psnr_shuffled'])})"))
    shuf = r["controllability"].get("delta_psnr_shuffled")
    se = r["controllability"].get("delta_psnr_stderr")
    se_txt = ("" if se is None or math.isnan(se) else
              f" ± {se:.2f} (standard error over clips)")
    shuf_txt = "" if shuf is None else f" (against shuffled actions {_fmt(shuf)})"
    lam_txt = "" if r["lam"] is None else f"; LAM usage {r['lam']['code_usage']:.2f}"
    print(f"tokenizer PSNR {r['tokenizer']['psnr']:.2f} SSIM {r['tokenizer']['ssim']:.3f} "
          f"usage {r['tokenizer']['code_usage']:.2f}; rollout PSNR {r['rollout']['psnr']:.2f} "
          f"SSIM {r['rollout']['ssim']:.3f} ({r['rollout']['actions']} actions; random actions "
          f"{r['rollout']['random_actions']['psnr']:.2f}, repeat last frame "
          f"{r['repeat_last_frame']['psnr']:.2f}, its tokens "
          f"{r['repeat_last_tokens']['psnr']:.2f}; errors pooled over clips: rollout "
          f"{r['rollout']['pooled_psnr']:.2f}, repeat last frame "
          f"{r['repeat_last_frame']['pooled_psnr']:.2f}); delta-PSNR@{t} "
          f"{_fmt(r['controllability']['delta_psnr'])}{se_txt}{shuf_txt}{true_txt}{lam_txt}"
          f"{nmi_txt}{probe_txt}", flush=True)
    fx = r.get("action_effect")
    if fx:
        le, de = fx["lam"], fx["dynamics"]
        print(f"action effect ({fx['windows']} windows of {fx['window']} frames): LAM "
              f"{le['distinct_codes']} distinct of {le['codes_used']} used codes, decoder "
              f"next-frame PSNR own codes {le['code_effect']['psnr_own']:.2f} vs random "
              f"{le['code_effect']['psnr_random']:.2f} dB; dynamics next-frame CE inferred "
              f"{de['next_frame_ce']['inferred']:.3f} vs random {de['next_frame_ce']['random']:.3f}",
              flush=True)
    print(f"wrote {paths['json']} (+ {', '.join(os.path.basename(paths[k]) for k in ('plot', 'grid', 'gif'))})",
          flush=True)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def run(argv: list[str]) -> None:
    run_command(main, argv)
