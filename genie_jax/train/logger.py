"""Metrics out: TensorBoard event files, a metrics.jsonl file and console progress lines.

Only process 0 writes. Values arrive as host numbers at log/eval steps, never every step.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np


class RunLogger:
    def __init__(self, workdir: str, total_steps: int, frames_per_step: int, enabled: bool = True):
        self.enabled = enabled
        self.total_steps = total_steps
        self.frames_per_step = frames_per_step
        self._writer = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(os.path.join(workdir, "tb"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self._last_time = None
        self._last_step = None

    def start(self, step: int) -> None:
        self._last_time, self._last_step = time.perf_counter(), step

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self._writer.add_scalar(f"{prefix}/{k}", float(v), step)
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
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._jsonl.close()


def _fmt(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
