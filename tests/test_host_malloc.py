"""genie_jax/host_malloc.py: which glibc tunables an entry point runs under, and that it
re-executes itself exactly once to get them (GLIBC_TUNABLES is read only at process start)."""
import os
import platform
import subprocess
import sys

import pytest

from genie_jax.host_malloc import OPT_OUT, TUNABLES, tuned_environ

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc tunables exist only on glibc Linux")


def _parse(value):
    return dict(item.split("=", 1) for item in value.split(":") if item)


@needs_glibc
def test_adds_every_tunable_and_keeps_the_users_own():
    env = tuned_environ({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=4:x.y=1"})
    got = _parse(env["GLIBC_TUNABLES"])
    assert got["glibc.malloc.arena_max"] == "4" and got["x.y"] == "1"  # the user's values win
    for key, value in TUNABLES.items():
        if key != "glibc.malloc.arena_max":
            assert got[key] == value
    assert env["PATH"] == "/bin"


@needs_glibc
def test_nothing_to_do_when_tuned_or_opted_out():
    tuned = tuned_environ({})
    assert tuned_environ(tuned) is None  # a re-executed process does not loop
    assert tuned_environ({OPT_OUT: "0"}) is None


PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
print("start", flush=True)
from genie_jax.host_malloc import reexec_with_tuned_malloc
reexec_with_tuned_malloc()
print("tunables", os.environ.get("GLIBC_TUNABLES", ""))
"""


@needs_glibc
def test_an_entry_point_reexecutes_once_with_the_tunables(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE.format(repo=REPO))
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    out = subprocess.run([sys.executable, str(script), "--flag=1"], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out.count("start") == 2  # the first run, then the re-executed one
    assert _parse(out[-1].split(" ", 1)[1]) == TUNABLES
    out = subprocess.run([sys.executable, str(script)], env={**env, OPT_OUT: "0"},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.splitlines() == ["start", "tunables "]
