"""Pick the episode source named by the `data` config section."""
from __future__ import annotations

from genie_jax.errors import UserError


def open_episode_source(data_cfg, split: str):
    if data_cfg.source == "procedural":
        from genie_jax.data.procedural import ProceduralVideo
        episodes = data_cfg.train_episodes if split == "train" else data_cfg.eval_episodes
        return ProceduralVideo(split=split, num_episodes=episodes,
                               episode_length=data_cfg.episode_length,
                               resolution=data_cfg.resolution, num_sprites=data_cfg.num_sprites,
                               seed=data_cfg.seed)
    if data_cfg.source == "arrayrecord":
        if not data_cfg.dir:
            raise UserError("data.source='arrayrecord' needs data.dir (a genie_jax dataset directory)")
        from genie_jax.data.shards import open_source
        return open_source(data_cfg.dir, split)
    raise UserError(f"data.source must be 'procedural' or 'arrayrecord', got {data_cfg.source!r}")
