"""`genie-jax train`: run the one trainer on the stage named by --config."""
from __future__ import annotations


from absl import flags
from ml_collections import config_flags

from genie_jax.commands.common import init_distributed, quiet_logging, run_command
from genie_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:args]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run folder: checkpoints, logs, summary")


def main(argv):
    del argv
    quiet_logging()
    if _CONFIG.value is None or not _WORKDIR.value:
        raise UserError("train needs --config=FILE[:args] and --workdir=DIR")
    init_distributed()
    import jax
    from genie_jax.train.trainer import NonFiniteError, train
    try:
        summary = train(_CONFIG.value, _WORKDIR.value)
    except NonFiniteError as e:
        raise UserError(str(e)) from e
    if jax.process_index() != 0:
        return
    ev = summary.get("eval", {})
    shown = "  ".join(f"{k} {v:.4g}" for k, v in ev.items())
    print(f"done: step {summary['step']}/{summary['total_steps']}"
          f"{' (preempted, checkpoint saved)' if summary['preempted'] else ''}; "
          f"held-out: {shown}; run folder {_WORKDIR.value}", flush=True)


def run(argv: list[str]) -> None:
    run_command(main, argv)
