import os

import numpy as np
from PIL import Image

from genie_jax.data import shards
from genie_jax.data.cli import main as data_main


def _rand(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write_mp4(path, frames, fps=10, faststart=False):
    import imageio_ffmpeg
    T, H, W, _ = frames.shape
    w = imageio_ffmpeg.write_frames(path, (W, H), fps=fps, macro_block_size=1,
                                    output_params=["-movflags", "+faststart"] if faststart else None)
    w.send(None)
    for f in frames:
        w.send(np.ascontiguousarray(f))
    w.close()


def _episodes(out, split="train"):
    src = shards.open_source(out, split)
    return {src.metadata(e)["source"]: (src.metadata(e), src.read_episode(e))
            for e in range(len(src))}


def test_npz_and_png_folder_round_trip_exactly(tmp_path):
    frames_npz, actions = _rand((37, 16, 16, 3), 1), np.arange(37) % 4
    np.savez(tmp_path / "ep.npz", frames=frames_npz, actions=actions)
    frames_png = _rand((11, 16, 16, 3), 2)
    (tmp_path / "imgs").mkdir()
    for i, f in enumerate(frames_png):  # f2 must sort before f10
        Image.fromarray(f).save(tmp_path / "imgs" / f"f{i}.png")
    gray = _rand((9, 16, 16), 3)
    np.save(tmp_path / "gray.npy", gray)
    out = str(tmp_path / "out")
    rc = data_main([
        "convert", str(tmp_path / "ep.npz"), str(tmp_path / "imgs"), str(tmp_path / "gray.npy"),
        f"--out={out}", "--resolution=16", "--split=1,0,0", "--record-frames=8", "--workers=1",
        "--no-progress"])
    assert rc == 0
    eps = _episodes(out)
    meta, d = eps[str(tmp_path / "ep.npz")]
    np.testing.assert_array_equal(d["frames"], frames_npz)
    np.testing.assert_array_equal(d["actions"], actions)
    assert meta["has_actions"] and meta["height"] == 16
    meta, d = eps[str(tmp_path / "imgs")]
    np.testing.assert_array_equal(d["frames"], frames_png)
    assert not meta["has_actions"]
    _, d = eps[str(tmp_path / "gray.npy")]
    np.testing.assert_array_equal(d["frames"], np.repeat(gray[..., None], 3, -1))


def test_bad_inputs_are_skipped_by_name_and_run_continues(tmp_path, capsys):
    good = _rand((20, 16, 16, 3))
    np.save(tmp_path / "good.npy", good)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    np.save(tmp_path / "wrong.npy", np.zeros((4, 5), np.uint8))
    np.save(tmp_path / "float.npy", np.zeros((4, 16, 16, 3), np.float32))
    video = _rand((40, 32, 32, 3), 4)
    _write_mp4(str(tmp_path / "full.mp4"), video, faststart=True)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[:len(data) // 2])
    out = str(tmp_path / "out")
    rc = data_main(["convert", str(tmp_path), f"--out={out}", "--resolution=16", "--split=1,0,0",
                    "--workers=2", "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    for name, why in [("empty.mp4", "empty file"), ("corrupt.mp4", "cannot decode"),
                      ("wrong.npy", "shape [4, 5]"), ("float.npy", "float32"),
                      ("truncated.mp4", "truncated")]:
        lines = [ln for ln in err.splitlines() if name in ln]
        assert len(lines) == 1 and "skipped" in lines[0] and why in lines[0], (name, err)
    eps = _episodes(out)
    assert set(eps) == {str(tmp_path / "good.npy"), str(tmp_path / "full.mp4")}
    np.testing.assert_array_equal(eps[str(tmp_path / "good.npy")][1]["frames"], good)
    assert eps[str(tmp_path / "full.mp4")][0]["num_frames"] == 40
    # No temporary or half-written shard anywhere; only shards of converted inputs.
    for root, _, files in os.walk(out):
        assert not [f for f in files if ".tmp" in f], files
    staged = [f for f in os.listdir(os.path.join(out, shards.STAGING_DIR))
              if f.endswith(".array_record")]
    assert len(staged) == 2 and not any("truncated" in f or "corrupt" in f for f in staged)


def test_rerun_skips_finished_work_and_adds_new_inputs(tmp_path, capsys):
    np.save(tmp_path / "a.npy", _rand((10, 8, 8, 3), 1))
    out = str(tmp_path / "out")
    args = [f"--out={out}", "--resolution=8", "--split=1,0,0", "--workers=1", "--no-progress"]
    assert data_main(["convert", str(tmp_path / "a.npy"), *args]) == 0
    mtimes = {f: os.stat(os.path.join(out, shards.STAGING_DIR, f)).st_mtime_ns
              for f in os.listdir(os.path.join(out, shards.STAGING_DIR))}
    capsys.readouterr()
    np.save(tmp_path / "b.npy", _rand((12, 8, 8, 3), 2))
    assert data_main(["convert", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), *args]) == 0
    text = capsys.readouterr().out
    assert "1 converted, 1 already done" in text
    for f, m in mtimes.items():  # a.npy's unit was not rewritten
        assert os.stat(os.path.join(out, shards.STAGING_DIR, f)).st_mtime_ns == m, f
    assert sorted(shards.open_source(out, "train").episode_lengths().tolist()) == [10, 12]
    # Different options into the same directory are refused with a clear error.
    assert data_main(["convert", str(tmp_path / "a.npy"), *args[:1], "--resolution=16",
                      *args[2:]]) == 2
    assert "different options" in capsys.readouterr().err


def test_video_resize_fps_and_episode_cut(tmp_path):
    video = np.zeros((60, 48, 96, 3), np.uint8)
    video[:, :, 48:] = 255  # right half white: a centre crop of 2:1 keeps both halves
    _write_mp4(str(tmp_path / "v.mp4"), video, fps=20)
    out = str(tmp_path / "out")
    assert data_main(["convert", str(tmp_path / "v.mp4"), f"--out={out}", "--resolution=32",
                      "--fps=10", "--episode-frames=12", "--split=1,0,0", "--workers=1",
                      "--no-progress"]) == 0
    src = shards.open_source(out, "train")
    # 60 frames at 20 fps -> 30 at 10 fps -> episodes of 12, 12, 6
    assert sorted(src.episode_lengths().tolist()) == [6, 12, 12]
    assert src.frame_shape == (32, 32, 3)
    f = src.read_window(0, 0, 6)["frames"].astype(int)
    assert f[:, :, :12].mean() < 40 and f[:, :, 20:].mean() > 215
    assert all(src.metadata(e)["fps"] == 10 for e in range(len(src)))


def test_resize_policies_on_arrays():
    from genie_jax.data.convert import ConvertOptions, resize_frames
    frames = np.full((2, 10, 40, 3), 200, np.uint8)
    crop = resize_frames(frames, ConvertOptions(height=8, width=8, resize="crop"))
    pad = resize_frames(frames, ConvertOptions(height=8, width=8, resize="pad"))
    stretch = resize_frames(frames, ConvertOptions(height=8, width=8, resize="stretch"))
    assert crop.shape == pad.shape == stretch.shape == (2, 8, 8, 3)
    assert (crop == 200).all() and (stretch == 200).all()
    assert (pad[:, 0] == 0).all() and (pad[:, 4] == 200).all()  # letterboxed top/bottom
