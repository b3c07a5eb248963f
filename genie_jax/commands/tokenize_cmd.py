"""`genie-jax data tokenize`: encode a dynamics config's train windows once with its frozen
tokenizer (and frozen LAM) into a token cache (genie_jax/data/token_cache.py).

  genie-jax data tokenize --config=experiments/configs/dynamics_coinrun.py:dir=data/coinrun,... \
      --out=DIR [--shard=i/n] [--batch=N] [--config.KEY=VALUE ...]

Then train with --config.data.token_cache=DIR. Resumable (finished units are kept). Sharding:
--shard=i/n encodes units i, i+n, ... (independent processes or hosts writing one folder); in a
multi-process JAX job (--coordinator_address etc., as `genie-jax train`) each process takes its
process index as i. The cache goes live when the last shard finds every unit written.
"""
from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from genie_jax.commands.common import init_distributed, quiet_logging, run_command
from genie_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "dynamics config file[:args]",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "cache folder (created; resumable)")
_SHARD = flags.DEFINE_string("shard", "", "i/n: this process encodes units i, i+n, ...; "
                             "default: the JAX process index / count")
_BATCH = flags.DEFINE_integer("batch", 0, "windows per encoder call (default data.batch_size)")
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
    init_distributed()
    import jax
    from genie_jax.data.token_cache import publish, write_cache
    shard, count = (parse_shard(_SHARD.value) if _SHARD.value
                    else (jax.process_index(), jax.process_count()))
    summary = write_cache(_CONFIG.value, _OUT.value, shard=shard, num_shards=count,
                          batch_size=_BATCH.value, progress=_PROGRESS.value)
    if count > 1 and not _SHARD.value:  # one JAX job: publish once every process is done
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("genie_jax tokenize")
        if jax.process_index() == 0 and not summary["published"]:
            summary.update(publish(_OUT.value))
    state = ("published" if summary["published"] else
             f"{summary['units_missing']} of {summary['units']} units still to encode by other shards")
    print(f"tokenize {summary['shard']}: {summary['windows_encoded']} windows encoded in "
          f"{summary['seconds']:.1f}s ({summary['windows_per_s']:.1f} windows/s); "
          f"{summary['num_windows']} windows in {summary['units']} units, {state}: {_OUT.value}",
          flush=True)
    print(json.dumps(summary), flush=True)


def run(argv: list[str]) -> None:
    run_command(main, argv)
