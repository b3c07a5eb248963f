"""The side-by-side train-step shapes (bench_vs_jasmine.py, bench_train_ab.py), and our stage
config at each; no flags here, so any benchmark can import them.

`small` is our `tiny` configs' (tokenizer b4 x T4 32x32, patch 2, width 128, 2+2 layers; LAM b16,
patch 4; dynamics 4 layers); `large` is issue 10's larger size: b2 x T16, 64x64 with patch 4
(256 tokens), width 512, 4 layers (4 + 4 for the tokenizer and LAM); `test` is for tests.
"""
from __future__ import annotations


SHAPES = {
    "test": dict(resolution=16, frames=4, batch=2, lam_batch=2, patch=4, lam_patch=4, width=32,
                 depth=1, dyn_depth=1, heads=2),
    "small": dict(resolution=32, frames=4, batch=4, lam_batch=16, patch=2, lam_patch=4,
                  width=128, depth=2, dyn_depth=4, heads=4),
    "large": dict(resolution=64, frames=16, batch=2, lam_batch=2, patch=4, lam_patch=4,
                  width=512, depth=4, dyn_depth=4, heads=8),
}
NUM_CODES, CODE_DIM, NUM_ACTIONS, MLP_RATIO = 1024, 32, 6, 4


def _shape(name: str) -> dict:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r} ({', '.join(SHAPES)})")
    return SHAPES[name]


def _video_model(m, s: dict, patch: int, codes: int) -> None:
    m.image_size = (s["resolution"], s["resolution"])
    m.patch_size, m.width, m.num_heads = patch, s["width"], s["heads"]
    m.depth = m.decoder_depth = s["depth"]
    m.num_codes, m.code_dim, m.mlp_ratio = codes, CODE_DIM, float(MLP_RATIO)
    m.max_frames = max(16, s["frames"])


def ours_config(stage: str, shape: str):
    import importlib
    s = _shape(shape)
    cfg = importlib.import_module(f"experiments.configs.{stage}").get_config("size=tiny")
    cfg.data.resolution = s["resolution"]
    cfg.data.num_frames = s["frames"]
    cfg.data.batch_size = s["lam_batch"] if stage == "lam" else s["batch"]
    cfg.data.train_episodes = 8
    if stage == "tokenizer":
        _video_model(cfg.model, s, s["patch"], NUM_CODES)
        cfg.model.temporal = "causal"  # Jasmine's tokenizer is an ST-ViViT
    elif stage == "lam":
        _video_model(cfg.model, s, s["lam_patch"], NUM_ACTIONS)
    else:
        _video_model(cfg.tokenizer.model, s, s["patch"], NUM_CODES)
        cfg.tokenizer.model.temporal = "causal"
        _video_model(cfg.lam.model, s, s["lam_patch"], NUM_ACTIONS)
        m = cfg.model
        m.image_size, m.patch_size = (s["resolution"], s["resolution"]), s["patch"]
        m.num_codes, m.num_actions = NUM_CODES, NUM_ACTIONS
        m.width, m.depth, m.num_heads = s["width"], s["dyn_depth"], s["heads"]
        m.mlp_ratio, m.max_frames = float(MLP_RATIO), max(16, s["frames"])
    return cfg
