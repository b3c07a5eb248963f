"""`genie-jax data ...`: dataset tooling (argparse; argv excludes the leading 'data').

  genie-jax data convert INPUT... --out=DIR [--resolution=64] [--resize=crop] [--fps=15] ...
  genie-jax data coinrun --out=DIR --episodes=N [--length=1000] [--sticky=0.5] [--seed=0] [--frameskip=1]
      [--policy=sticky_random|sticky_classes]
  genie-jax data atari --game=pong --out=DIR --episodes=N [--frameskip=4]
  genie-jax data info DIR
  genie-jax data tokenize --config=DYNAMICS_CONFIG[:knobs] --out=DIR [--shard=i/n]
      (absl flags, as `genie-jax train`: genie_jax/commands/tokenize_cmd.py)

Every command is resumable (re-running skips finished work) and ends with a summary.
The dataset format is described in genie_jax/data/shards.py and docs/data.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _resolution(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            h, w = text.lower().split("x")
            return int(h), int(w)
        return int(text), int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be N or HxW, got {text!r}") from None


def _fractions(text: str):
    from genie_jax.data.shards import parse_fractions
    try:
        return tuple(parse_fractions(text).items())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _common(p: argparse.ArgumentParser, default_resize: str) -> None:
    p.add_argument("--out", required=True, help="dataset directory (created; resumable)")
    p.add_argument("--resolution", type=_resolution, default=(64, 64),
                   help="N or HxW (height x width), default 64")
    p.add_argument("--resize", choices=("crop", "pad", "stretch"), default=default_resize,
                   help="crop: cover then centre-crop; pad: fit then letterbox; stretch: per axis")
    p.add_argument("--split", type=_fractions, default=_fractions("0.9,0.05,0.05"),
                   help="train,val,test fractions (by episode, hash of episode key)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--record-frames", type=int, default=16,
                   help="frames per ArrayRecord record (a window reads only its records)")
    p.add_argument("--compression", choices=("none", "zstd"), default="none")
    p.add_argument("--min-frames", type=int, default=2, help="drop shorter episodes")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--summary-json", help="also write the summary here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genie-jax data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="video files / image folders / .npy .npz -> dataset")
    c.add_argument("inputs", nargs="+", help="files or folders (searched recursively)")
    _common(c, "crop")
    c.add_argument("--fps", type=float, default=None, help="resample to this rate (nearest frame)")
    c.add_argument("--input-fps", type=float, default=30.0,
                   help="rate of image folders and arrays without an fps entry")
    c.add_argument("--episode-frames", type=int, default=None,
                   help="cut long inputs into episodes of this many frames")
    c.add_argument("--split-by", choices=("episode", "source"), default="episode",
                   help="source keeps all episodes of one input in one split")

    for name, helptext in (("coinrun", "procgen CoinRun with true actions"),
                           ("atari", "Atari (ale-py) with true actions")):
        g = sub.add_parser(name, help=helptext)
        _common(g, "stretch")
        g.add_argument("--episodes", type=int, required=True)
        g.add_argument("--length", type=int, default=1000, help="max frames per episode")
        g.add_argument("--policy", choices=("sticky_random", "sticky_classes"),
                       default="sticky_random",
                       help="sticky_random: uniform over the game's actions; sticky_classes "
                       "(coinrun): uniform over its 6 control classes, one action each")
        g.add_argument("--sticky", type=float, default=0.5,
                       help="probability of repeating the previous action")
        g.add_argument("--seed", type=int, default=0, help="episode e gets seed SEED+e")
        g.add_argument("--block", type=int, default=16, help="episodes per resumable unit")
        if name == "atari":
            g.add_argument("--game", required=True, help="ALE ROM id, e.g. pong, breakout")
            g.add_argument("--frameskip", type=int, default=4)
        else:
            g.add_argument("--env", default="coinrun", help="procgen game (default coinrun)")
            g.add_argument("--frameskip", type=int, default=1,
                           help="game steps per recorded frame, the action held for all of them")

    i = sub.add_parser("info", help="describe a dataset directory")
    i.add_argument("dir")
    sub.add_parser("tokenize", help="encode a dynamics config's train windows into a token "
                   "cache (genie-jax data tokenize --helpfull)", add_help=False)
    return parser


def _log(msg: str) -> None:
    from tqdm import tqdm
    tqdm.write(msg, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tokenize"]:  # a config-driven command: absl flags, like `genie-jax train`
        from genie_jax.commands import tokenize_cmd
        tokenize_cmd.run(["genie-jax data tokenize"] + argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    from genie_jax.data import shards
    try:
        if args.command == "convert":
            from genie_jax.data import convert as cv
            opts = cv.ConvertOptions(
                height=args.resolution[0], width=args.resolution[1], resize=args.resize,
                fps=args.fps, input_fps=args.input_fps, episode_frames=args.episode_frames,
                min_frames=args.min_frames, record_frames=args.record_frames,
                fractions=args.split, split_seed=args.split_seed, split_by=args.split_by,
                compression=args.compression)
            summary = cv.convert(args.inputs, args.out, opts, workers=args.workers,
                                 progress=not args.no_progress, log=_log)
            print(cv.format_summary(summary))
            ok = summary["converted"] + summary["already_done"] > 0
        elif args.command in ("coinrun", "atari"):
            from genie_jax.data import games
            if args.frameskip < 1:
                raise ValueError(f"--frameskip must be >= 1; got {args.frameskip}")
            if args.policy != "sticky_random" and (args.command != "coinrun"
                                                   or args.env != "coinrun"):
                raise ValueError(f"--policy={args.policy} is for CoinRun only (its action "
                                 f"classes); use sticky_random")
            opts = games.GameOptions(
                episodes=args.episodes, length=args.length, height=args.resolution[0],
                width=args.resolution[1], resize=args.resize, sticky=args.sticky,
                seed=args.seed, block=args.block, fractions=args.split,
                split_seed=args.split_seed, record_frames=args.record_frames,
                compression=args.compression, min_frames=args.min_frames,
                frameskip=args.frameskip if args.command == "coinrun" else 1,
                policy=args.policy)
            if args.command == "coinrun":
                summary = games.generate_coinrun(args.out, opts, workers=args.workers,
                                                 progress=not args.no_progress, log=_log,
                                                 env_name=args.env)
            else:
                summary = games.generate_atari(args.out, args.game, opts, workers=args.workers,
                                               frameskip=args.frameskip,
                                               progress=not args.no_progress, log=_log)
            print(f"{summary['generated']} blocks generated, {summary['already_done']} already "
                  f"done, {summary['skipped']} failed: {summary['episodes']} episodes, "
                  f"{summary['frames']} frames, {summary['bytes'] / 2**20:.1f} MiB in "
                  f"{summary['seconds']:.1f}s ({summary['frames_per_s']:.0f} frames/s)")
            for split, st in summary.get("splits", {}).items():
                print(f"  {split}: {st['episodes']} episodes, {st['frames']} frames")
            ok = summary["generated"] + summary["already_done"] > 0
        else:  # info
            index = shards._load_index(args.dir)
            out = dict(dir=args.dir, frame_shape=index["frame_shape"],
                       record_frames=index["record_frames"],
                       splits={k: dict(episodes=len(v), frames=sum(e["num_frames"] for e in v),
                                       with_actions=sum(bool(e["has_actions"]) for e in v))
                               for k, v in index["splits"].items()})
            print(json.dumps(out, indent=1))
            return 0
    except (shards.DatasetError, ValueError, RuntimeError) as e:
        print(f"genie-jax data {args.command}: error: {e}", file=sys.stderr)
        return 2
    if getattr(args, "summary_json", None):
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
