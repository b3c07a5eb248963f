"""How the host's C allocator serves XLA:CPU, set once per process.

An XLA:CPU step's temporaries are one fresh allocation per call: 0.46 GB for the quickstart's
tokenizer step, 1.1 GB for its dynamics step. glibc hands any block over 32 MiB its own mmap and
unmaps it on free, so every step faults the whole buffer back in, 4 KiB at a time (118k faults a
step for the tokenizer), and the kernel zeroes each page: about a third of the step's time on
this 2-core VM. These glibc tunables keep one heap that is never trimmed (one arena, no mmap), so
the next step reuses the freed buffer, and back it with transparent huge pages:

  quickstart tokenizer, `genie-jax train`, steps/s     2.21 / 2.01 default, 2.90 / 2.70 tuned
  (experiments/RESULTS.md, "Where the CPU step goes")

The cost is memory: the heap keeps what it grew to, and freed blocks fragment it. The quickstart
dynamics stage peaked at 5.2 GB of RSS instead of 2.0 GB.

GLIBC_TUNABLES is read only when a process starts. So the entry points (`genie-jax`, the
benchmarks) call `reexec_with_tuned_malloc()` first: it re-executes the same command once with
the tunables added, keeping any the user already set. `GENIE_JAX_MALLOC=0` leaves glibc as it
is. A notebook or any other process that imports genie_jax is left alone (set GLIBC_TUNABLES
before starting it, to the value `tuned_environ` gives).
"""
from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNABLES = {
    "glibc.malloc.arena_max": "1",  # one heap: blocks freed by any thread are reused by all
    "glibc.malloc.mmap_max": "0",  # big blocks come from that heap, not from their own mmap
    "glibc.malloc.trim_threshold": str(1 << 40),  # and the heap is not given back between steps
    "glibc.malloc.hugetlb": "1",  # madvise transparent huge pages: 512x fewer page faults
}
OPT_OUT = "GENIE_JAX_MALLOC"


def _parse(tunables: str) -> dict[str, str]:
    out = {}
    for item in filter(None, tunables.split(":")):
        key, _, value = item.partition("=")
        out[key] = value
    return out


def tuned_environ(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` with TUNABLES added to GLIBC_TUNABLES (the user's own values win), or None
    when nothing is to change: opted out, not Linux with glibc, or every tunable already set."""
    if environ.get(OPT_OUT, "1") == "0":
        return None
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    current = _parse(environ.get("GLIBC_TUNABLES", ""))
    missing = {k: v for k, v in TUNABLES.items() if k not in current}
    if not missing:
        return None
    merged = {**current, **missing}
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(f"{k}={v}" for k, v in merged.items())
    return env


def reexec_with_tuned_malloc() -> None:
    """Re-execute this command (same interpreter, same arguments) with TUNABLES in effect,
    unless they already are; returns only when no re-execution is needed. Call it first thing
    in an entry point, before anything is printed or any thread starts."""
    env = tuned_environ(os.environ)
    if env is None or not getattr(sys, "orig_argv", None):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
