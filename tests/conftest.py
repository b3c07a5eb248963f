import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_CFG = os.path.join(REPO, "experiments", "configs", "tokenizer.py")


def run_cli(args, *, devices: int = 1, env=None, timeout=300, check=True, cwd=None):
    """Run `python -m genie_jax ...` in a fresh process with `devices` simulated CPU devices."""
    e = dict(os.environ)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["JAX_PLATFORMS"] = "cpu"
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "genie_jax", *args], env=e, cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"genie_jax {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_python(code: str, *, devices: int = 1, timeout=300, env=None):
    e = dict(os.environ)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["JAX_PLATFORMS"] = "cpu"
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], env=e, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc.stdout
