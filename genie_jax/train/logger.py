"""Metrics out: TensorBoard event files, a metrics.jsonl file and console progress lines.

Only process 0 writes. Values arrive as host numbers at log/eval steps, never every step.
A resumed run first drops the metrics.jsonl records after the step it resumed from (a killed run
may have logged past its last checkpoint), so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from genie_jax.media import write_text


class RunLogger:
    def __init__(self, workdir: str, total_steps: int, frames_per_step: int, enabled: bool = True):
        self.enabled = enabled
        self.total_steps = total_steps
        self.frames_per_step = frames_per_step
        self._writer = None
        self._jsonl = None
        self._jsonl_path = os.path.join(workdir, "metrics.jsonl")
        if enabled:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(os.path.join(workdir, "tb"))
        self._last_time = None
        self._last_step = None

    def resume(self, step: int) -> None:
        """Keep only the records up to `step` (atomically), then append from there on."""
        if not self.enabled:
            return
        if os.path.exists(self._jsonl_path):
            with open(self._jsonl_path) as f:
                lines = f.readlines()
            kept = [ln for ln in lines if _record_step(ln) <= step]
            if len(kept) != len(lines):
                write_text(self._jsonl_path, "".join(kept))
        self._jsonl = open(self._jsonl_path, "a")

    def start(self, step: int) -> None:
        self._last_time, self._last_step = time.perf_counter(), step

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self._writer.add_scalar(f"{prefix}/{k}", float(v), step)
        if self._jsonl is None:
            self._jsonl = open(self._jsonl_path, "a")
        self._jsonl.write(json.dumps({"step": step, "split": prefix,
                                      **{k: float(v) for k, v in values.items()}}) + "\n")
        self._jsonl.flush()

    def images(self, step: int, images: dict) -> None:
        if not self.enabled:
            return
        for name, img in images.items():
            self._writer.add_image(name, np.asarray(img), step, dataformats="HWC")

    def progress(self, step: int, values: dict) -> dict:
        now = time.perf_counter()
        steps = step - self._last_step
        dt = max(now - self._last_time, 1e-9)
        sps = steps / dt
        self._last_time, self._last_step = now, step
        rate = {"steps_per_s": sps, "frames_per_s": sps * self.frames_per_step}
        if self.enabled:
            eta = (self.total_steps - step) / sps if sps > 0 else float("inf")
            shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            line = (f"step {step}/{self.total_steps}  {shown}  |  {sps:.2f} steps/s  "
                    f"{rate['frames_per_s']:.0f} frames/s  ETA {_fmt(eta)}")
            print(line, flush=True)
        return rate

    def flush(self) -> None:
        if self.enabled:
            self._writer.flush()
            if self._jsonl is not None:
                self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            if self._jsonl is not None:
                self._jsonl.close()


def _record_step(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a torn last line of a killed run: dropped


def _fmt(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
