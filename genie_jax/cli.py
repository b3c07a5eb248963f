"""`genie-jax` command line (also `python -m genie_jax`).

  genie-jax train --config=experiments/configs/tokenizer.py:size=tiny --workdir=runs/tok \
      [--config.train.steps=500 ...] [--coordinator_address=host:port --num_processes=N --process_id=I]
  genie-jax eval --workdir=runs/dyn [--out=DIR --episodes=N --rollout_frames=T --seed=S]
  genie-jax sample --workdir=runs/dyn --out=FILE.gif|.mp4 (--actions=0,3,1 | --from_clip=EPISODE)
  genie-jax actions fit --workdir=runs/dyn [--data=DIR --split=val --eval_split=test]
  genie-jax play --workdir=runs/dyn [--port=8000 --host=127.0.0.1 --prompt=random|EPISODE|FILE]
  genie-jax sweep --config=FILE[:knobs] --grid=KEY=V1,V2 [--seeds=N] --root=DIR [--shard=I/N]
  genie-jax sweep report --root=DIR
  genie-jax plan --config=experiments/configs/dynamics.py:size=11b --topology=v5p:8x8x4 \
      [--devices=N --steps=125000 --out=plan.json]
  genie-jax data ...     (dataset tooling; see `genie-jax data --help`)
"""
from __future__ import annotations

import sys

USAGE = """usage: genie-jax COMMAND [flags]

commands:
  train   train the stage named by --config (resumes from --workdir)
  eval    held-out metrics of a dynamics run (PSNR/SSIM, delta-PSNR, codebook usage, NMI)
  sample  roll a dynamics run out into a GIF/MP4 (given or LAM-inferred latent actions)
  actions name a run's latent actions after the game's controls (actions fit | actions show)
  play    play a dynamics run in the browser (keys -> actions, one model step per press)
  sweep   a grid of runs over config keys and seeds, resumable and shardable (sweep report:
          mean/std over seeds, differences from a baseline, learning curves)
  plan    will a config fit a TPU topology, and how fast will it run? (compiled ahead of time)
  data    convert videos / generate game datasets (genie-jax data --help)
"""


def _fail(msg: str, code: int = 2):
    print(f"genie-jax: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(argv: list[str] | None = None) -> None:
    if argv is None:  # a program, not a call from Python: tune glibc for XLA:CPU first
        from genie_jax.host_malloc import reexec_with_tuned_malloc
        reexec_with_tuned_malloc()
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if len(argv) >= 2 else 2)
    command, rest = argv[1], argv[2:]
    if command == "data":
        from genie_jax.data.cli import main as data_main
        sys.exit(data_main(rest))
    if command == "train":
        from genie_jax.commands import train_cmd
        train_cmd.run([argv[0]] + rest)
        return
    if command in ("eval", "sample", "actions", "play", "sweep", "plan"):
        import importlib
        mod = importlib.import_module(f"genie_jax.commands.{command}_cmd")
        mod.run([argv[0]] + rest)
        return
    _fail(f"unknown command {command!r}\n{USAGE}")


if __name__ == "__main__":
    run()
