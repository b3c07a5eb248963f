"""`genie-jax actions`: the game's own controls for a dynamics run's latent actions.

  genie-jax actions fit --workdir=runs/dyn [--data=DIR] [--split=val] [--eval_split=test]
      [--episodes=N --batch_size=32]      learn the map (genie_jax/actions_fit.py), save
                                          WORKDIR/action_map.json, print held-out accuracy
  genie-jax actions show --workdir=runs/dyn   print the controls, keys and latent ids in use
"""
from __future__ import annotations

from absl import flags

from genie_jax.commands.common import quiet_logging, run_command
from genie_jax.errors import UserError

SUBCOMMANDS = ("fit", "show")

_WORKDIR = flags.DEFINE_string("workdir", None, "a dynamics run folder")
_DATA = flags.DEFINE_string("data", None, "genie_jax dataset dir with true actions "
                            "(default: the run's data)")
_SPLIT = flags.DEFINE_string("split", "val", "split the map is fitted on")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", "test", "split of the held-out accuracy "
                                  "('' to skip)")
_EPISODES = flags.DEFINE_integer("episodes", 0, "episodes per split (0: all)")
_BATCH = flags.DEFINE_integer("batch_size", 32, "LAM windows per call")
_CKPT = flags.DEFINE_integer("checkpoint_step", None, "checkpoint step (default: newest)")


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _show(workdir: str) -> None:
    import os

    from genie_jax.action_map import FILENAME, load_action_map
    from genie_jax.runs import Run
    cfg = Run(workdir).config(stage="dynamics")
    m = load_action_map(workdir, int(cfg.model.num_actions))
    origin = (f"{os.path.join(workdir, FILENAME)} (held-out accuracy {_pct(m.accuracy)})"
              if m.source == "fit" else "numbered latent actions (no action map fitted)")
    print(f"{len(m.names)} controls, {m.num_actions} latent actions: {origin}")
    for n, a in zip(m.names, m.latent):
        keys = [("Space" if k == " " else k) for k, v in m.keys.items() if v == n]
        print(f"  {n:<12} latent {a}   keys {' '.join(keys) or '-'}")


def main(argv):
    quiet_logging()
    sub = argv[1:]
    if len(sub) != 1 or sub[0] not in SUBCOMMANDS:
        raise UserError(f"usage: genie-jax actions {{{'|'.join(SUBCOMMANDS)}}} --workdir=DIR "
                        f"[flags]; got {' '.join(sub) or 'no subcommand'}")
    if not _WORKDIR.value:
        raise UserError(f"actions {sub[0]} needs --workdir=DIR (a dynamics run)")
    if sub[0] == "show":
        _show(_WORKDIR.value)
        return
    from genie_jax.actions_fit import FitSettings, fit
    s = FitSettings(data=_DATA.value, split=_SPLIT.value, eval_split=_EVAL_SPLIT.value,
                    episodes=_EPISODES.value, batch_size=_BATCH.value, step=_CKPT.value)
    amap, r = fit(_WORKDIR.value, s)
    for n, a in zip(amap.names, amap.latent):
        print(f"  {n:<12} -> latent {a}", flush=True)
    if r["unseen_controls"]:
        print(f"  not in split {s.split!r} (left out): {', '.join(r['unseen_controls'])}")
    f = r["fit"]
    print(f"fit on {s.split!r}: {f['transitions']} transitions, accuracy {_pct(f['accuracy'])} "
          f"(chance {_pct(f['chance'])})")
    h = r["heldout"]
    if h:
        print(f"held-out {h['split']!r}: {h['transitions']} transitions, accuracy "
              f"{_pct(h['accuracy'])} (chance {_pct(h['chance'])}), balanced accuracy "
              f"{_pct(h['balanced_accuracy'])} (chance {_pct(h['balanced_chance'])})")
    print(f"wrote {r['path']} ({r['seconds']:.1f} s)", flush=True)


def run(argv: list[str]) -> None:
    run_command(main, argv)
