import os
import shutil
import subprocess
import sys
import tempfile


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent XLA compilation cache for the whole test session, in-process and in every
# subprocess it starts (they inherit the environment): the suite builds the same test-size
# programs many times, and a cache hit costs a fraction of a compile. A fresh folder per session
# (unless GENIE_TEST_JAX_CACHE names one), so every session still compiles each program once.
_OWN_CACHE = "GENIE_TEST_JAX_CACHE" not in os.environ
_CACHE = os.environ.get("GENIE_TEST_JAX_CACHE") or tempfile.mkdtemp(prefix="genie-jax-test-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
# Every program (a 0.3 s threshold cut the cache from 2630 files to 18 for the model, stage and
# trainer tests and saved 5% there, but the whole suite took as long: 220.7 s against 217-218 s).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# xdist workers inherit the controller's environment: name the folder so they share it.
os.environ.setdefault("GENIE_TEST_JAX_CACHE", _CACHE)

# Tests run tiny programs a few times each, so XLA's compile time dominates their run time.
# LLVM's backend optimisation level 0 and the older elemental fusion emitters compile them about
# 2.2x faster (a LAM pulse test: 19.0 s at level 0 alone on a loaded machine against 30.8 s;
# 8.9 s -> 6.7 s more with the emitters off, idle), and one LLVM module per program instead of
# several compiled in parallel, which two busy cores cannot use (the test tokenizer's train step:
# 0.93 -> 0.80 s to compile). The library and benchmarks keep the defaults.
# Set before JAX is imported (here, in every xdist worker and every subprocess).
TEST_XLA_FLAGS = os.environ.get(
    "GENIE_TEST_XLA_FLAGS",
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
    "--xla_cpu_parallel_codegen_split_count=1")


def xla_env(devices: int = 1, env=None) -> dict:
    """The environment of a test subprocess: `devices` simulated CPU devices + the test flags."""
    e = dict(os.environ)
    # One device is the CPU default: leaving the flag out keeps XLA_FLAGS, and so the persistent
    # cache's keys (they hash XLA_FLAGS), equal to the test process's own, so a program compiled
    # in-process is a cache hit in a one-device subprocess and back.
    count = f"--xla_force_host_platform_device_count={devices} " if devices != 1 else ""
    e["XLA_FLAGS"] = f"{count}{TEST_XLA_FLAGS}"
    e["JAX_PLATFORMS"] = "cpu"
    e.update(env or {})
    return e


if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)
TOKENIZER_CFG = os.path.join(REPO, "experiments", "configs", "tokenizer.py")
# For CLI runs that only make a run folder (or params, or losses) to check: no held-out eval.
NO_EVAL = "--config.train.eval_batches=0"


def run_cli(args, *, devices: int = 1, env=None, timeout=300, check=True, cwd=None):
    """Run `python -m genie_jax ...` in a fresh process with `devices` simulated CPU devices."""
    e = xla_env(devices, env)
    proc = subprocess.run([sys.executable, "-m", "genie_jax", *args], env=e, cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"genie_jax {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_python(code: str, *, devices: int = 1, timeout=300, env=None, args=()):
    e = xla_env(devices, env)
    proc = subprocess.run([sys.executable, "-c", code, *args], env=e, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc.stdout
