"""`genie-jax data tokenize`: encode a dynamics config's train windows once with its frozen
tokenizer (and frozen LAM) into a token cache (genie_jax/data/token_cache.py).

  genie-jax data tokenize --config=experiments/configs/dynamics_coinrun.py:dir=data/coinrun,... \
      --out=DIR [--shard=i/n] [--batch=N] [--unit_windows=4096] [--config.KEY=VALUE ...]

Then train with --config.data.token_cache=DIR. Resumable (finished units are kept). Sharding:
--shard=i/n encodes units i, i+n, ..., so n independent processes (one per host, or several on
one) fill one folder, at the same time or one after another; the shard that finds every unit
written publishes the cache. Each process encodes on its own devices; no JAX multi-process job
is needed (and --coordinator_address is refused: orbax's multi-process restore expects global
arrays, which a per-process encoder does not use).
"""
from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags

from genie_jax.commands.common import quiet_logging, run_command
from genie_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "dynamics config file[:args]",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "cache folder (created; resumable)")
_SHARD = flags.DEFINE_string("shard", "0/1", "i/n: this process encodes units i, i+n, ...")
_BATCH = flags.DEFINE_integer("batch", 0, "windows per encoder call (default data.batch_size)")
_UNIT = flags.DEFINE_integer("unit_windows", 4096, "windows per unit file (the unit of "
                             "resuming and of sharding)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bar on stderr")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must be i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise UserError(f"--shard={text}: need 0 <= i < n")
    return i, n


def main(argv):
    del argv
    quiet_logging()
    if _CONFIG.value is None or not _OUT.value:
        raise UserError("data tokenize needs --config=FILE[:args] (a dynamics config) and --out=DIR")
    if flags.FLAGS["coordinator_address"].value or os.environ.get("GENIE_COORDINATOR_ADDRESS"):
        raise UserError("data tokenize shards with --shard=i/n over independent processes, not a "
                        "multi-process JAX job: drop --coordinator_address")
    from genie_jax.data.token_cache import write_cache
    shard, count = parse_shard(_SHARD.value)
    summary = write_cache(_CONFIG.value, _OUT.value, shard=shard, num_shards=count,
                          batch_size=_BATCH.value, unit_windows=_UNIT.value,
                          progress=_PROGRESS.value)
    state = ("published" if summary["published"] else
             f"{summary['units_missing']} of {summary['units']} units still to encode by other shards")
    print(f"tokenize {summary['shard']}: {summary['windows_encoded']} windows encoded in "
          f"{summary['seconds']:.1f}s ({summary['windows_per_s']:.1f} windows/s); "
          f"{summary['num_windows']} windows in {summary['units']} units, {state}: {_OUT.value}",
          flush=True)
    print(json.dumps(summary), flush=True)


def run(argv: list[str]) -> None:
    run_command(main, argv)
