"""Convert ordinary video into a genie_jax episode dataset (format: genie_jax/data/shards.py).

Inputs (files, or folders searched recursively):
  * video files .mp4 .webm .mov .mkv .avi .gif: decoded by ffmpeg (imageio-ffmpeg), which also
    does the resampling and resizing below;
  * a folder that directly holds images (.png .jpg .jpeg .bmp .webp): one episode, frames in
    natural order of the file names (frame2 before frame10);
  * .npy: uint8 [T,H,W,C] (C in 1, 3, 4) or [T,H,W]; .npz: array `frames` (else `obs`,
    `observations`, or the only array), optional `actions` int [T] (taken after frame t) and `fps`;
    a 5-D `frames` [N,T,H,W,C] holds N episodes (then `actions` is [N,T]).
Each input is one *unit* (its episodes are one source); grayscale becomes RGB, alpha is dropped.

Resolution policy (--resolution=64 or HxW, --resize):
  crop    (default) scale so the frame covers HxW keeping its aspect, then centre-crop;
  pad     scale so the frame fits inside HxW keeping its aspect, then centre on black;
  stretch scale each axis independently.
An input already at HxW is stored bit-exact (no resampling).

Frame rate (--fps): output frame k shows the source frame nearest to time k/fps (ffmpeg's fps
filter for video; the same rule for arrays and image folders, whose rate is --input-fps unless an
npz holds `fps`). Actions are taken from the source frame that was kept; when frames are dropped
the recorded action is no longer the whole transition, so keep the source rate for action data.

Long inputs are cut into episodes of --episode-frames (default: no cut); pieces shorter than
--min-frames are dropped. A video that decodes to far fewer frames than its header promises
(a truncated MP4 decodes a prefix without error) is treated as corrupt and skipped.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
import sys
from typing import Iterator

import numpy as np

from genie_jax.data import shards, staging

VIDEO_EXTS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARRAY_EXTS = (".npy", ".npz")
RESIZE_POLICIES = ("crop", "pad", "stretch")


class SkipInput(Exception):
    """An input that cannot be converted; the message is the reason."""


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    height: int = 64
    width: int = 64
    resize: str = "crop"
    fps: float | None = None  # None keeps the source rate
    input_fps: float = 30.0  # rate assumed for arrays / image folders
    episode_frames: int | None = None
    min_frames: int = 2
    record_frames: int = shards.DEFAULT_RECORD_FRAMES
    fractions: tuple[tuple[str, float], ...] = (("train", 0.9), ("val", 0.05), ("test", 0.05))
    split_seed: int = 0
    split_by: str = "episode"
    compression: str = "none"
    min_decoded_fraction: float = 0.9  # of the header's frame count, else "truncated"

    def dataset_options(self) -> dict:
        """The options that must agree between runs writing into one dataset."""
        d = dataclasses.asdict(self)
        d["fractions"] = dict(self.fractions)
        return d


# ------------------------------------------------------------------------------------------------
# Input discovery
# ------------------------------------------------------------------------------------------------

def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _kind(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in ARRAY_EXTS:
        return "array"
    return None


def discover(inputs: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """([(kind, path)], [(path, reason)]) for the given files/folders; kind in video/array/images."""
    jobs, bad = [], []
    seen = set()

    def add(kind, path):
        ap = os.path.abspath(path)
        if ap not in seen:
            seen.add(ap)
            jobs.append((kind, ap))

    def walk(folder):
        names = sorted(os.listdir(folder), key=_natural_key)
        if any(os.path.splitext(n)[1].lower() in IMAGE_EXTS for n in names):
            add("images", folder)
        for n in names:
            p = os.path.join(folder, n)
            if os.path.isdir(p):
                walk(p)
            elif _kind(p):
                add(_kind(p), p)

    for inp in inputs:
        if os.path.isdir(inp):
            walk(inp)
        elif os.path.isfile(inp):
            if _kind(inp):
                add(_kind(inp), inp)
            else:
                bad.append((inp, f"unsupported file type {os.path.splitext(inp)[1] or '(none)'}"))
        else:
            bad.append((inp, "no such file or directory"))
    return jobs, bad


def unit_key(path: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(path.rstrip(os.sep)))[:48] or "input"
    return f"{base}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]}"


# ------------------------------------------------------------------------------------------------
# Frame sources: each yields (meta, iterator of uint8 [n, H, W, 3] blocks, iterator of actions|None)
# ------------------------------------------------------------------------------------------------

def _vf_filter(opts: ConvertOptions) -> str:
    H, W = opts.height, opts.width
    parts = [f"fps={opts.fps:g}"] if opts.fps else []
    if opts.resize == "crop":
        parts += [f"scale={W}:{H}:force_original_aspect_ratio=increase:flags=area",
                  f"crop={W}:{H}"]
    elif opts.resize == "pad":
        parts += [f"scale={W}:{H}:force_original_aspect_ratio=decrease:flags=area",
                  f"pad={W}:{H}:(ow-iw)/2:(oh-ih)/2"]
    else:
        parts += [f"scale={W}:{H}:flags=area"]
    return ",".join(parts + ["setsar=1"])


def read_video(path: str, opts: ConvertOptions, block: int = 64) -> tuple[dict, Iterator]:
    import imageio_ffmpeg
    logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
    if os.path.getsize(path) == 0:
        raise SkipInput("empty file")
    gen = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24",
                                     output_params=["-vf", _vf_filter(opts)])
    try:
        meta = next(gen)
    except (RuntimeError, OSError, StopIteration, IOError) as e:
        gen.close()
        raise SkipInput(f"cannot decode: {_first_line(e)}") from None
    W, H = meta["size"]
    if (H, W) != (opts.height, opts.width):
        gen.close()
        raise SkipInput(f"decoder gave {W}x{H} frames, expected {opts.width}x{opts.height}")
    src_fps = float(meta.get("fps") or 0) or opts.input_fps
    out_fps = opts.fps or src_fps
    duration = float(meta.get("duration") or 0)
    expected = int(duration * out_fps) if duration > 0 and not path.lower().endswith(".gif") else 0
    info = dict(source=path, fps=out_fps, source_fps=src_fps,
                source_size=list(meta.get("source_size") or ()), codec=meta.get("codec"))
    fsize = H * W * 3

    def frames():
        n = 0
        buf = []
        try:
            for raw in gen:  # iterate: never list() a reader
                if len(raw) != fsize:
                    raise SkipInput(f"frame of {len(raw)} bytes, expected {fsize}")
                buf.append(np.frombuffer(raw, np.uint8).reshape(H, W, 3))
                n += 1
                if len(buf) == block:
                    yield np.stack(buf), None
                    buf = []
        except SkipInput:
            raise
        except Exception as e:  # noqa: BLE001 - ffmpeg failing mid-stream
            raise SkipInput(f"decoding failed after {n} frames: {_first_line(e)}") from None
        finally:
            gen.close()
        if buf:
            yield np.stack(buf), None
        if n == 0:
            raise SkipInput("no frames decoded")
        if expected and n < opts.min_decoded_fraction * expected - 2:
            raise SkipInput(f"truncated: decoded {n} of ~{expected} frames the header promises")

    return info, frames()


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # ffmpeg's own message is the most useful line, usually the last one.
    for ln in reversed(lines):
        if "Invalid data" in ln or "moov atom" in ln or "No such file" in ln:
            return ln.strip()[:200]
    return lines[0][:200]


def _to_rgb(frames: np.ndarray, what: str) -> np.ndarray:
    if frames.dtype != np.uint8:
        raise SkipInput(f"{what} has dtype {frames.dtype}, expected uint8")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4) or min(frames.shape[:3]) < 1:
        raise SkipInput(f"{what} has shape {list(frames.shape)}, expected [T,H,W,C] with C in "
                        "1/3/4 or [T,H,W]")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames[..., :3]


def resize_frames(frames: np.ndarray, opts: ConvertOptions) -> np.ndarray:
    """Apply the resolution policy to uint8 RGB frames [n, h, w, 3] (bit-exact if no change)."""
    H, W = opts.height, opts.width
    n, h, w, _ = frames.shape
    if (h, w) == (H, W):
        return frames
    from PIL import Image
    if opts.resize == "stretch":
        size = (W, H)
    else:
        scale = max(H / h, W / w) if opts.resize == "crop" else min(H / h, W / w)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        size = (sw, sh)
    out = np.zeros((n, H, W, 3), np.uint8)
    for i in range(n):
        im = Image.fromarray(frames[i]).resize(size, Image.Resampling.BILINEAR)
        a = np.asarray(im)
        if opts.resize == "stretch":
            out[i] = a
        elif opts.resize == "crop":
            y0, x0 = (a.shape[0] - H) // 2, (a.shape[1] - W) // 2
            out[i] = a[y0:y0 + H, x0:x0 + W]
        else:
            y0, x0 = (H - a.shape[0]) // 2, (W - a.shape[1]) // 2
            out[i, y0:y0 + a.shape[0], x0:x0 + a.shape[1]] = a
    return out


def _resample_index(n_src: int, src_fps: float, out_fps: float | None) -> np.ndarray:
    if not out_fps or abs(out_fps - src_fps) < 1e-9:
        return np.arange(n_src)
    n_out = int(np.floor(n_src * out_fps / src_fps + 1e-9))
    return np.minimum(np.round(np.arange(n_out) * src_fps / out_fps).astype(np.int64), n_src - 1)


def read_arrays(path: str, opts: ConvertOptions, block: int = 256):
    """-> list of (info, block iterator) for one .npy/.npz (several episodes for 5-D frames)."""
    if os.path.getsize(path) == 0:
        raise SkipInput("empty file")
    try:
        if path.lower().endswith(".npy"):
            frames = np.load(path, mmap_mode="r", allow_pickle=False)
            actions, fps = None, None
        else:
            z = np.load(path, allow_pickle=False)
            keys = list(z.keys())
            name = next((k for k in ("frames", "obs", "observations") if k in keys),
                        keys[0] if len(keys) == 1 else None)
            if name is None:
                raise SkipInput(f"no 'frames' array (has {keys})")
            frames = z[name]
            actions = z["actions"] if "actions" in keys else None
            fps = float(z["fps"]) if "fps" in keys else None
    except SkipInput:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable array file
        raise SkipInput(f"cannot read array: {_first_line(e)}") from None
    if frames.ndim == 5:
        eps = [(frames[i], None if actions is None else actions[i]) for i in range(len(frames))]
    else:
        eps = [(frames, actions)]
    out = []
    src_fps = fps or opts.input_fps
    for i, (f, a) in enumerate(eps):
        what = f"frames{'' if len(eps) == 1 else f'[{i}]'}"
        if f.ndim < 3:
            raise SkipInput(f"{what} has shape {list(f.shape)}, expected [T,H,W,C] or [T,H,W]")
        _to_rgb(np.asarray(f[:1]), what)  # raises SkipInput naming a bad dtype or shape
        if a is not None:
            a = np.asarray(a)
            if a.shape != (len(f),) or not np.issubdtype(a.dtype, np.integer):
                raise SkipInput(f"actions has shape {list(a.shape)} {a.dtype}, expected int "
                                f"[{len(f)}]")
        idx = _resample_index(len(f), src_fps, opts.fps)

        def blocks(f=f, a=a, idx=idx):
            for s in range(0, len(idx), block):
                sel = idx[s:s + block]
                fr = resize_frames(_to_rgb(np.asarray(f[sel]), "frames"), opts)
                yield fr, None if a is None else a[sel].astype(np.int32)

        out.append((dict(source=path if len(eps) == 1 else f"{path}[{i}]",
                         fps=opts.fps or src_fps, source_fps=src_fps,
                         source_size=list(f.shape[1:3])), blocks()))
    return out


def read_images(folder: str, opts: ConvertOptions, block: int = 64):
    from PIL import Image
    names = sorted((n for n in os.listdir(folder) if os.path.splitext(n)[1].lower() in IMAGE_EXTS),
                   key=_natural_key)
    idx = _resample_index(len(names), opts.input_fps, opts.fps)
    first = {}

    def load(name):
        p = os.path.join(folder, name)
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001
            raise SkipInput(f"cannot read image {name}: {_first_line(e)}") from None
        first.setdefault("size", list(a.shape[:2]))
        return resize_frames(a[None], opts)[0]

    def blocks():
        for s in range(0, len(idx), block):
            yield np.stack([load(names[i]) for i in idx[s:s + block]]), None

    info = dict(source=folder, fps=opts.fps or opts.input_fps, source_fps=opts.input_fps)
    return info, blocks()


# ------------------------------------------------------------------------------------------------
# One input = one unit (filled in a worker process)
# ------------------------------------------------------------------------------------------------

def _stat(path: str) -> list:
    st = os.stat(path)
    if os.path.isdir(path):
        names = [n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in IMAGE_EXTS]
        return [len(names), max((os.stat(os.path.join(path, n)).st_mtime_ns for n in names),
                                default=0)]
    return [st.st_size, st.st_mtime_ns]


def _skip_reason(e: BaseException) -> str:
    if isinstance(e, SkipInput):
        return str(e)
    return f"{type(e).__name__}: {_first_line(e)}"


def _convert_input(opts: ConvertOptions, unit: staging.Unit, writer: shards.UnitWriter) -> None:
    """Stream the episodes of one input (unit.job = (kind, path)) into its unit's writer."""
    kind, path = unit.job
    if kind == "video":
        streams = [read_video(path, opts)]
    elif kind == "array":
        streams = read_arrays(path, opts)
    elif kind == "images":
        streams = [read_images(path, opts)]
    else:
        raise SkipInput(f"unknown input kind {kind}")
    for info, blocks in streams:
        info.update(height=opts.height, width=opts.width, resize=opts.resize, seed=None)
        cut = opts.episode_frames or 0
        part, in_ep = 0, 0
        writer.begin_episode(dict(info, part=part))
        for fr, act in blocks:
            while len(fr):
                take = len(fr) if not cut else min(len(fr), cut - in_ep)
                writer.add(fr[:take], None if act is None else act[:take])
                in_ep += take
                fr = fr[take:]
                act = None if act is None else act[take:]
                if cut and in_ep == cut:
                    writer.end_episode()
                    part, in_ep = part + 1, 0
                    writer.begin_episode(dict(info, part=part))
        writer.end_episode()
    if not writer.episodes:
        raise SkipInput(f"no episode of at least {opts.min_frames} frames")


def convert(inputs: list[str], out_dir: str, opts: ConvertOptions, workers: int = 1,
            progress: bool = True, log=None) -> dict:
    """Convert inputs into the dataset at out_dir (resumable). Returns the summary dict.

    Each input is one unit keyed by its [size, mtime_ns] (a changed input is converted again);
    staging, resuming and the removal policy are genie_jax/data/staging.py's.
    """
    from tqdm import tqdm
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    if opts.resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {opts.resize!r}")
    if opts.record_frames < 1 or opts.height < 1 or opts.width < 1:
        raise ValueError("record_frames, height and width must be >= 1")
    jobs, bad = discover(inputs)
    n_inputs = len(jobs) + len(bad)
    units = []
    for kind, path in jobs:
        try:
            stat = _stat(path)
        except OSError as e:
            bad.append((path, f"cannot stat: {e.strerror}"))
            continue
        units.append(staging.Unit(unit_key(path), key=stat, meta=dict(input=path, kind=kind),
                                  label=path, job=(kind, path)))
    for path, reason in bad:
        log(f"skipped {path}: {reason}")
    writer_args = dict(frame_shape=(opts.height, opts.width, 3), fractions=dict(opts.fractions),
                       split_seed=opts.split_seed, split_by=opts.split_by,
                       record_frames=opts.record_frames, compression=opts.compression,
                       min_frames=opts.min_frames)
    run = staging.run_units(
        out_dir, units, functools.partial(_convert_input, opts), options=opts.dataset_options(),
        writer_args=writer_args, key_field="input_stat", workers=workers, processes=True,
        reason=_skip_reason, progress=progress, progress_unit="file", desc="convert", log=log)
    summary = dict(inputs=n_inputs, converted=run.written,
                   already_done=run.already_done, skipped=len(bad) + len(run.skipped),
                   episodes=run.episodes, frames=run.frames, bytes=run.bytes,
                   skipped_files=[[p, r] for p, r in bad] +
                   [[u.label, r] for u, r in run.skipped],
                   seconds=run.seconds, frames_per_s=run.frames_per_s)
    if run.splits is not None:
        summary["splits"] = run.splits
        for split, st in run.splits.items():
            if dict(opts.fractions).get(split, 0) > 0 and st["episodes"] == 0:
                log(f"warning: split {split!r} got no episode (hash-based split of "
                    f"{summary['episodes']} episodes); use more episodes or other fractions")
    return summary


def format_summary(s: dict) -> str:
    lines = [f"{s.get('converted', 0)} converted, {s.get('already_done', 0)} already done, "
             f"{s['skipped']} skipped: {s['episodes']} episodes, {s['frames']} frames, "
             f"{s['bytes'] / 2**20:.1f} MiB in {s.get('seconds', 0):.1f}s "
             f"({s.get('frames_per_s', 0):.0f} frames/s)"]
    for split, st in s.get("splits", {}).items():
        lines.append(f"  {split}: {st['episodes']} episodes, {st['frames']} frames, "
                     f"{st['shards']} shards")
    return "\n".join(lines)
