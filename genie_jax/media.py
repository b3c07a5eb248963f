"""Images and videos for evaluation and sampling: nearest-neighbour upscaling, frame grids, a
line plot drawn with PIL (no matplotlib), and atomic PNG / GIF / MP4 writers (temp file in the
same folder, then rename, so a reader never sees a half-written file)."""
from __future__ import annotations

import os
import uuid

import numpy as np

VIDEO_EXTS = (".gif", ".mp4")


def to_uint8(frames) -> np.ndarray:
    """float in [0, 1] (or uint8) -> uint8."""
    a = np.asarray(frames)
    if a.dtype == np.uint8:
        return a
    return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def upscale(frames_XHWC: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of the last-but-one two axes (H, W) by an integer factor."""
    if factor <= 1:
        return frames_XHWC
    return np.repeat(np.repeat(frames_XHWC, factor, axis=-3), factor, axis=-2)


def auto_scale(height: int, width: int, target: int = 256) -> int:
    """Integer factor that brings the shorter side to about `target` pixels (at least 1)."""
    return max(1, int(round(target / max(1, min(height, width)))))


def grid(rows_RTHWC: np.ndarray, gap: int = 2, fill: int = 255) -> np.ndarray:
    """[rows, cols, H, W, C] uint8 -> one image with `gap`-pixel separators."""
    R, T, H, W, C = rows_RTHWC.shape
    out = np.full((R * H + (R - 1) * gap, T * W + (T - 1) * gap, C), fill, np.uint8)
    for r in range(R):
        for t in range(T):
            y, x = r * (H + gap), t * (W + gap)
            out[y:y + H, x:x + W] = rows_RTHWC[r, t]
    return out


def hstack(frames: list[np.ndarray], gap: int = 2, fill: int = 255) -> np.ndarray:
    """Side by side [..., H, W, C] arrays (same H) with separators: -> [..., H, sum W + gaps, C]."""
    parts = []
    for i, f in enumerate(frames):
        if i:
            parts.append(np.full((*f.shape[:-2], gap, f.shape[-1]), fill, np.uint8))
        parts.append(f)
    return np.concatenate(parts, axis=-2)


def _tmp_path(path: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.tmp-{uuid.uuid4().hex[:8]}{ext}"  # keep the extension: it picks the format


def _atomic(path: str, write) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _tmp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: str, text: str) -> str:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return _atomic(path, w)


def write_png(path: str, image_HWC: np.ndarray) -> str:
    from PIL import Image
    return _atomic(path, lambda tmp: Image.fromarray(to_uint8(image_HWC)).save(tmp, format="PNG"))


def write_gif(path: str, frames_THWC: np.ndarray, fps: float = 8.0) -> str:
    from PIL import Image
    frames = to_uint8(frames_THWC)
    images = [Image.fromarray(f) for f in frames]

    def w(tmp):
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=int(round(1000 / fps)), loop=0, disposal=1)
    return _atomic(path, w)


def write_mp4(path: str, frames_THWC: np.ndarray, fps: float = 8.0) -> str:
    """H.264 MP4 (yuv420p: lossy colour, for viewing only). Odd sizes are padded to even."""
    import imageio_ffmpeg
    frames = to_uint8(frames_THWC)
    T, H, W, C = frames.shape
    if C == 1:
        frames = np.repeat(frames, 3, axis=-1)
    ph, pw = H % 2, W % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")

    def w(tmp):
        gen = imageio_ffmpeg.write_frames(tmp, (W + pw, H + ph), fps=fps, codec="libx264",
                                          pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                                          quality=None, macro_block_size=1,
                                          ffmpeg_log_level="error", output_params=["-crf", "18"])
        gen.send(None)
        for f in frames:
            gen.send(np.ascontiguousarray(f))
        gen.close()
    return _atomic(path, w)


def write_video(path: str, frames_THWC: np.ndarray, fps: float = 8.0) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".gif":
        return write_gif(path, frames_THWC, fps)
    if ext == ".mp4":
        return write_mp4(path, frames_THWC, fps)
    raise ValueError(f"video output must end in {' or '.join(VIDEO_EXTS)}; got {path!r}")


# ---- a small line plot --------------------------------------------------------------------------

_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return []
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(first, hi + 1e-9 * step, step)]


def line_plot(series: dict[str, list[float]], *, x=None, title: str = "", xlabel: str = "",
              ylabel: str = "", size: tuple[int, int] = (640, 420)) -> np.ndarray:
    """Lines (one per named series, same length) on white -> uint8 [H, W, 3]."""
    from PIL import Image, ImageDraw
    W, H = size
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 60, 20, 30, 50
    names = list(series)
    n = max((len(series[k]) for k in names), default=0)
    xs = np.asarray(x if x is not None else np.arange(1, n + 1), np.float64)
    ys = np.concatenate([np.asarray(series[k], np.float64) for k in names]) if names else np.zeros(0)
    ys = ys[np.isfinite(ys)]
    ylo, yhi = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    pad = 0.05 * max(yhi - ylo, 1e-3)
    ylo, yhi = ylo - pad, yhi + pad
    xlo, xhi = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
    if xhi - xlo < 1e-9:
        xlo, xhi = xlo - 1, xhi + 1

    def px(xv, yv):
        return (left + (xv - xlo) / (xhi - xlo) * (W - left - right),
                H - bottom - (yv - ylo) / (yhi - ylo) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for yv in _nice_ticks(ylo, yhi):
        _, yp = px(xlo, yv)
        d.line([(left, yp), (W - right, yp)], fill=(225, 225, 225))
        d.text((4, yp - 6), f"{yv:g}", fill=(0, 0, 0))
    for xv in xs if xs.size <= 20 else _nice_ticks(xlo, xhi):
        xp, _ = px(xv, ylo)
        d.line([(xp, H - bottom), (xp, H - bottom + 4)], fill=(0, 0, 0))
        d.text((xp - 4, H - bottom + 6), f"{xv:g}", fill=(0, 0, 0))
    for i, k in enumerate(names):
        c = _COLOURS[i % len(_COLOURS)]
        pts = [px(a, b) for a, b in zip(xs, series[k]) if np.isfinite(b)]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        for p in pts:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=c)
        d.line([(left + 10, top + 12 + 16 * i), (left + 30, top + 12 + 16 * i)], fill=c, width=3)
        d.text((left + 36, top + 6 + 16 * i), k, fill=(0, 0, 0))
    d.text((left, 8), title, fill=(0, 0, 0))
    d.text(((W - len(xlabel) * 6) / 2, H - 20), xlabel, fill=(0, 0, 0))
    d.text((W - right - 6 * len(ylabel), 8), ylabel, fill=(0, 0, 0))
    return np.asarray(img)
