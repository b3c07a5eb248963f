"""`genie-jax play`: play a dynamics run in the browser (see genie_jax/play/server.py).

  genie-jax play --workdir=runs/dyn [--port=8000] [--host=127.0.0.1]
      [--prompt=random|EPISODE|image.png|frames.npy] [--split=test] [--prompt_frames=1]
      [--steps=S --temperature=X --pick=sample|mbr --guidance=W --seed=N --idle_timeout=600
       --max_sessions=8]
"""
from __future__ import annotations

import socket
import sys
import time

from absl import flags

from genie_jax.commands.common import DecodingFlags, quiet_logging, run_command
from genie_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "a dynamics run folder")
_PORT = flags.DEFINE_integer("port", 8000, "port to serve on (0: any free port)")
_HOST = flags.DEFINE_string("host", "127.0.0.1",
                            "address to bind; the default serves this machine only")
_PROMPT = flags.DEFINE_string("prompt", "random",
                              "first prompt: 'random' (a held-out clip), a held-out episode "
                              "number, a PNG/JPEG (resized), or a .npy of uint8 frames [T,H,W,C]")
_SPLIT = flags.DEFINE_string("split", "test", "held-out split random prompts come from "
                             "(default: 'test', or 'val' where 'test' has no usable episode)")
_PROMPT_FRAMES = flags.DEFINE_integer("prompt_frames", 1, "frames in a held-out prompt clip")
_DECODING = DecodingFlags()
_SEED = flags.DEFINE_integer("seed", 0, "seed of the prompts and sampling of every session")
_IDLE = flags.DEFINE_float("idle_timeout", 600.0, "seconds before an idle tab's session is dropped")
_MAX_SESSIONS = flags.DEFINE_integer("max_sessions", 8, "tabs served at once")
_MAX_HISTORY = flags.DEFINE_integer("max_history", 1000,
                                    "frames kept per session (step-back depth, download length)")
_CKPT = flags.DEFINE_integer("checkpoint_step", None, "checkpoint step (default: newest)")


def _check_flags() -> None:
    if not _WORKDIR.value:
        raise UserError("play needs --workdir=DIR (a dynamics run)")
    if not 0 <= _PORT.value <= 65535:
        raise UserError(f"--port must be in [0, 65535]; got {_PORT.value}")
    for name, v in (("idle_timeout", _IDLE.value), ("max_sessions", _MAX_SESSIONS.value),
                    ("max_history", _MAX_HISTORY.value), ("prompt_frames", _PROMPT_FRAMES.value)):
        if v <= 0:
            raise UserError(f"--{name} must be > 0; got {v}")
    if _SPLIT.value == "train":
        raise UserError("prompts come from held-out data: --split must not be 'train'")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (bound now, so a busy port fails before the model is compiled)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                        "pick another --port or --host") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def main(argv):
    del argv
    quiet_logging()
    _check_flags()
    import numpy as np
    from aiohttp import web

    from genie_jax.action_map import load_action_map
    from genie_jax.evaluation import load_world_model
    from genie_jax.play.prompts import file_prompt, open_clips
    from genie_jax.play.server import PlayServer, PlaySettings
    from genie_jax.play.session import PlayEngine

    workdir, prompt = _WORKDIR.value, _PROMPT.value.strip()
    t0 = time.perf_counter()
    wm = load_world_model(workdir, step=_CKPT.value, **_DECODING.values())
    action_map = load_action_map(workdir, int(wm.dynamics.num_actions))
    engine = PlayEngine(wm, action_map, _PROMPT_FRAMES.value)
    settings = PlaySettings(idle_timeout=_IDLE.value, max_sessions=_MAX_SESSIONS.value,
                            max_history=_MAX_HISTORY.value, seed=_SEED.value)
    if prompt not in ("random", "") and not prompt.isdigit():
        settings.prompt_frames = file_prompt(prompt, engine.image_size, engine.channels)
    try:
        splits = [_SPLIT.value] if flags.FLAGS["split"].present else ["test", "val"]
        clips = open_clips(wm.config, splits, _PROMPT_FRAMES.value)
    except UserError as e:
        if settings.prompt_frames is None:
            raise
        print(f"genie-jax play: no random prompts ({e})", file=sys.stderr, flush=True)
        clips = None
    if prompt.isdigit():
        settings.prompt_episode = int(prompt)
        first, _ = clips.clip(np.random.default_rng(settings.seed), settings.prompt_episode)
    elif settings.prompt_frames is not None:
        first = settings.prompt_frames
    else:
        first, _ = clips.clip(np.random.default_rng(settings.seed))
    sock = bind(_HOST.value, _PORT.value)
    compile_s = engine.warm_up(first)
    server = PlayServer(engine, clips, settings, workdir=workdir)
    names = ", ".join(action_map.names)
    print(f"genie-jax play: {workdir} ({engine.num_actions} latent actions; controls {names}; "
          f"{'x'.join(map(str, engine.image_size))} frames; loaded and compiled in "
          f"{time.perf_counter() - t0:.1f} s, of which warm-up {compile_s:.1f} s)", flush=True)
    print(f"open {url_of(sock)} in a browser; press Ctrl+C to stop", flush=True)
    web.run_app(server.app(), sock=sock, print=None, handle_signals=True)
    print("genie-jax play: stopped", flush=True)


def run(argv: list[str]) -> None:
    run_command(main, argv)
