"""Flags and set-up shared by the absl commands: config loading, multi-host init, errors."""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from genie_jax.errors import UserError

_COORD = flags.DEFINE_string("coordinator_address", None,
                             "host:port of process 0 for multi-process runs "
                             "(or env GENIE_COORDINATOR_ADDRESS).")
_NPROC = flags.DEFINE_integer("num_processes", None,
                              "number of JAX processes (or env GENIE_NUM_PROCESSES).")
_PID = flags.DEFINE_integer("process_id", None, "this process's index (or env GENIE_PROCESS_ID).")


class DecodingFlags:
    """--steps, --temperature, --pick and --guidance: how a world is decoded, defined once for
    every command that samples one (eval, play, sample). Each is None unless given, so the run's
    config.sampling decides."""

    def __init__(self):
        self._flags = dict(
            steps=flags.DEFINE_integer("steps", None,
                                       "MaskGIT steps (default: the run's sampling.steps)"),
            temperature=flags.DEFINE_float("temperature", None,
                                           "sampling temperature (default: the run's)"),
            pick=flags.DEFINE_enum("pick", None, ["sample", "mbr"],
                                   "MaskGIT token pick: sample at the temperature, or mbr "
                                   "(minimum Bayes risk in the tokenizer's code space; "
                                   "deterministic). Default: the run's sampling.pick, else sample"),
            guidance=flags.DEFINE_float("guidance", None,
                                        "action guidance w: each MaskGIT step picks from "
                                        "u + w (c - u), c the log-probabilities with the frame's "
                                        "action, u with 'no action' (w > 1: stronger response to "
                                        "the action; each step's pass runs on twice the batch). "
                                        "Default: the run's sampling.guidance, else 1 (none)"))

    def values(self) -> dict:
        """The keyword arguments of load_world_model, EvalSettings and SampleSettings."""
        return {name: holder.value for name, holder in self._flags.items()}


def init_distributed() -> None:
    """Start jax.distributed when a coordinator is given by flag or environment."""
    coord = _COORD.value or os.environ.get("GENIE_COORDINATOR_ADDRESS")
    nproc = _NPROC.value or _env_int("GENIE_NUM_PROCESSES")
    pid = _PID.value if _PID.value is not None else _env_int("GENIE_PROCESS_ID")
    if not coord:
        return
    if nproc is None or pid is None:
        raise UserError("--coordinator_address needs --num_processes and --process_id "
                        "(or GENIE_NUM_PROCESSES / GENIE_PROCESS_ID)")
    import jax
    jax.distributed.initialize(coordinator_address=coord, num_processes=nproc, process_id=pid)


def _env_int(name: str):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def add_config_package_root(argv: list[str]) -> None:
    """Config files import their base (`from experiments.configs.base import ...`): put the
    folder holding the config's top-level package on sys.path, wherever we are run from."""
    for a in argv:
        if a.startswith("--config="):
            path = os.path.abspath(a.split("=", 1)[1].split(":", 1)[0])
            root = os.path.dirname(path)
            while os.path.exists(os.path.join(root, "__init__.py")):
                root = os.path.dirname(root)
            if root not in sys.path:
                sys.path.insert(0, root)


def parse_flags_or_die(argv: list[str]) -> list[str]:
    """absl flag parsing whose errors (e.g. a config key that does not exist) are one line."""
    add_config_package_root(argv)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        msg = str(e).strip().splitlines()
        print(f"genie-jax: error: {' '.join(msg)[:600]}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a config file that fails to load or parse
        print(f"genie-jax: error: could not load the config ({type(e).__name__}: {e})",
              file=sys.stderr, flush=True)
        sys.exit(2)


def quiet_logging() -> None:
    """Orbax/grain INFO lines drown the progress lines; --verbosity brings them back."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def run_command(main, argv: list[str]) -> None:
    """Run an absl `main`; a UserError becomes one line on stderr and exit code 2."""
    def _main(a):
        try:
            main(a)
        except UserError as e:
            print(f"genie-jax: error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
    app.run(_main, argv=argv, flags_parser=parse_flags_or_die)
