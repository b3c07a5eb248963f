"""What bounds the latent actions' NMI with CoinRun's controls under the data's sticky random
policy: every episode of a split is recorded again from its seed with every action tried at every
step (genie_jax/action_bound.py), and, given a dynamics run with a LAM, that LAM's codes are
scored on all transitions and on those where the control shows.

  python experiments/coinrun_action_bound.py --data=data/coinrun_quick --split=test \
      --workdir=runs/coinrun_quick/dyn --out=runs/coinrun_quick/action_bound.json

Writes JSON (a temporary file, then renamed) and prints it. The episodes recorded again must
equal the dataset's, frame for frame; one that does not is an error naming it.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

_DATA = flags.DEFINE_string("data", None, "CoinRun dataset folder (`genie-jax data coinrun`)")
_SPLIT = flags.DEFINE_string("split", "test", "split to analyse")
_WORKDIR = flags.DEFINE_string("workdir", None,
                                "a pixel LAM run, or a dynamics run whose LAM, to score (optional)")
_EPISODES = flags.DEFINE_integer("episodes", 0, "first N episodes of the split (0: all)")
_OUT = flags.DEFINE_string("out", None, "JSON output path (optional)")


def main(argv):
    del argv
    from genie_jax.commands.common import quiet_logging
    quiet_logging()
    from genie_jax.action_bound import bound_report, concat_labels, transition_labels
    from genie_jax.data.games import ensure_procgen_venv, probe_coinrun_episode
    from genie_jax.data.shards import open_source
    from genie_jax.errors import UserError
    from genie_jax.evaluation import infer_actions_windowed, load_lam_inference

    if not _DATA.value:
        raise app.UsageError("--data is required")
    try:
        source = open_source(_DATA.value, _SPLIT.value)
    except (ValueError, IndexError, OSError) as e:
        raise UserError(f"--data={_DATA.value}: cannot open split {_SPLIT.value!r}: {e}") from None
    lengths = np.asarray(source.episode_lengths())
    n_eps = len(lengths) if _EPISODES.value <= 0 else min(_EPISODES.value, len(lengths))
    infer = window = None
    if _WORKDIR.value:
        infer, window = load_lam_inference(_WORKDIR.value)
    python = ensure_procgen_venv()
    labels, codes = [], []
    for e in range(n_eps):
        T = int(lengths[e])
        if T < 2:
            continue
        meta = source.metadata(e)
        frames, actions, outcomes = probe_coinrun_episode(meta, T, python)
        data = source.read_window(e, 0, T)
        real = np.asarray(data["frames"], np.uint8)
        if real.shape[1:3] != frames.shape[1:3]:
            raise UserError(f"{_DATA.value} {_SPLIT.value} episode {e}: frames are "
                            f"{real.shape[1:3]}, the game's {frames.shape[1:3]}; only datasets "
                            "kept at the game's 64x64 can be checked")
        if (len(frames) != T or not np.array_equal(frames, real)
                or not np.array_equal(actions, np.asarray(data["actions"]))):
            raise UserError(f"{_DATA.value} {_SPLIT.value} episode {e} (seed {meta.get('seed')}):"
                            " recording it again gave other frames or actions")
        labels.append(transition_labels(outcomes[:T - 1], actions[:T - 1]))
        if infer is not None:
            codes.append(infer_actions_windowed(infer, real[None], window)[0])
        print(f"episode {e}: {T} frames", file=sys.stderr, flush=True)
    if not labels:
        raise UserError(f"{_DATA.value} {_SPLIT.value}: no episode of 2 or more frames")
    report = bound_report(concat_labels(labels), np.concatenate(codes) if codes else None)
    report.update(data=os.path.abspath(_DATA.value), split=_SPLIT.value, episodes=len(labels),
                  workdir=os.path.abspath(_WORKDIR.value) if _WORKDIR.value else None)
    text = json.dumps(report, indent=2)
    print(text)
    if _OUT.value:
        tmp = _OUT.value + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, _OUT.value)


if __name__ == "__main__":
    from genie_jax.commands.common import run_command  # a UserError: one line, exit code 2
    run_command(main, sys.argv)
