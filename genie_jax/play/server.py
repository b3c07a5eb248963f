"""The aiohttp web app of `genie-jax play`: a page, a WebSocket per browser tab, downloads.

Routes
  GET /                              the page (static/index.html; static/play.js)
  GET /ws                            one WebSocket per tab = one PlaySession
  GET /session/{id}/download.gif     the tab's frames so far (also .mp4), upscaled

WebSocket protocol (JSON text messages; one binary message = an uploaded PNG/JPEG prompt)
  client -> server  {"type": "step", "action": "RIGHT" | "3", "id": n}
                    {"type": "gallery", "id": n}     next frame for every latent action
                    {"type": "reset", "id": n}       a random held-out clip as the new prompt
                    {"type": "back", "id": n}        step back one frame
  server -> client  {"type": "hello", ...controls, keys, sizes}
                    {"type": "frame", "frame": data URL, "action", "step", "step_ms", ...}
                    {"type": "gallery", "frames": [{"latent", "name", "frame"}], "step", "ms"}
                    {"type": "error", "message", "id"}   the session goes on
                    {"type": "bye", "message"}           before the server closes the socket
Every reply to a request carries its "id". Model calls run one at a time in a worker thread, so
the page of one tab never waits on another tab's page, only on its model time.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import tempfile
import time
import weakref

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from genie_jax import media
from genie_jax.errors import UserError
from genie_jax.play.prompts import HeldOutClips, image_prompt
from genie_jax.play.session import PlayEngine, PlaySession, png_data_url

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
log = logging.getLogger("genie_jax.play")


@dataclasses.dataclass
class PlaySettings:
    idle_timeout: float = 600.0     # seconds without a message before a tab's session is dropped
    max_sessions: int = 8
    max_history: int = 1000         # frames kept per session (step-back depth, download length)
    seed: int = 0
    prompt_episode: int | None = None   # first prompt: this held-out episode, else random
    prompt_frames: np.ndarray | None = None  # first prompt: these frames (--prompt=FILE)


class PlayServer:
    def __init__(self, engine: PlayEngine, clips: HeldOutClips | None, settings: PlaySettings,
                 workdir: str = ""):
        self.engine, self.clips, self.settings, self.workdir = engine, clips, settings, workdir
        self.sessions: dict[str, PlaySession] = {}
        self.sockets: weakref.WeakSet = weakref.WeakSet()
        self.opened = 0
        self._model_lock: asyncio.Lock | None = None

    # ---- app ----------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_get("/", self.index)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get(r"/session/{sid}/download.{ext:(gif|mp4)}", self.download)
        app.router.add_static("/static/", STATIC)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(os.path.join(STATIC, "index.html"),
                                headers={"Cache-Control": "no-cache"})

    async def _close_sockets(self, app) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shut down")

    async def _model(self, fn, *args):
        """Run a blocking model call in a worker thread, one at a time across all sessions."""
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            return await asyncio.to_thread(fn, *args)

    # ---- prompts --------------------------------------------------------------------------------
    def _new_prompt(self, session: PlaySession, first: bool) -> tuple[np.ndarray, str]:
        s = self.settings
        if first and s.prompt_frames is not None:
            return s.prompt_frames, "the --prompt file"
        if self.clips is None:
            raise UserError("this server has no held-out data for random prompts; upload an "
                            "image instead")
        rng = np.random.default_rng([s.seed, session.number, session.resets])
        return self.clips.clip(rng, s.prompt_episode if first else None)

    def _reset(self, session: PlaySession, first: bool) -> np.ndarray:
        frames, info = self._new_prompt(session, first)
        return session.reset(frames, info)

    def _reset_upload(self, session: PlaySession, data: bytes) -> np.ndarray:
        e = self.engine
        frames = image_prompt(data, e.image_size, e.channels, what="uploaded prompt")
        return session.reset(frames, "uploaded image")

    # ---- messages ---------------------------------------------------------------------------
    def _hello(self, session: PlaySession) -> dict:
        e, am = self.engine, self.engine.action_map
        return {"type": "hello", "session": session.id, "workdir": self.workdir,
                "controls": [{"name": n, "latent": a} for n, a in zip(am.names, am.latent)],
                "keys": am.keys, "action_source": am.source, "num_actions": e.num_actions,
                "gallery_names": [am.name_of(a) for a in range(e.num_actions)],
                "image_size": list(e.image_size), "channels": e.channels,
                "max_frames": int(e.wm.max_frames), "idle_timeout": self.settings.idle_timeout,
                "random_prompts": self.clips is not None, "max_upload_bytes": MAX_UPLOAD_BYTES}

    def _frame_msg(self, session: PlaySession, frame: np.ndarray, rid, action=None) -> dict:
        return {"type": "frame", "id": rid, "frame": png_data_url(frame), "action": action,
                "step": session.frames_generated, "can_back": session.frames_generated > 0,
                "prompt": session.prompt_info, **session.latency()}

    def _latent(self, action) -> tuple[int, str]:
        """A control name or latent id from the page -> (latent id, name shown)."""
        am = self.engine.action_map
        if action is None or isinstance(action, (dict, list, bool)):
            raise UserError(f"a step needs \"action\": a control name ({', '.join(am.names)}) or "
                            f"a latent id 0..{self.engine.num_actions - 1}; got {action!r}")
        text = str(action).strip()
        ids = am.parse(text)
        if len(ids) != 1:
            raise UserError(f"one action per step; got {text!r}")
        by_name = {n.upper(): n for n in am.names}
        return ids[0], by_name.get(text.upper(), am.name_of(ids[0]))

    async def _handle(self, ws, session: PlaySession, msg) -> None:
        rid = None
        try:
            if msg.type == WSMsgType.BINARY:
                frame = await self._model(self._reset_upload, session, msg.data)
                await ws.send_json(self._frame_msg(session, frame, rid))
                return
            try:
                req = json.loads(msg.data)
            except (TypeError, ValueError):
                req = None
            if not isinstance(req, dict) or not isinstance(req.get("type"), str):
                raise UserError(f"malformed message {str(msg.data)[:80]!r}: expected JSON like "
                                '{"type": "step", "action": "RIGHT"}')
            rid, kind = req.get("id"), req["type"]
            if kind == "step":
                latent, name = self._latent(req.get("action"))
                frame = await self._model(session.step, latent, name)
                await ws.send_json(self._frame_msg(session, frame, rid, name))
            elif kind == "gallery":
                t0 = time.perf_counter()
                frames = await self._model(session.gallery)
                names = [self.engine.action_map.name_of(a) for a in range(len(frames))]
                await ws.send_json({
                    "type": "gallery", "id": rid, "step": session.frames_generated,
                    "ms": round((time.perf_counter() - t0) * 1e3, 1),
                    "frames": [{"latent": a, "name": n, "frame": png_data_url(f)}
                               for a, (n, f) in enumerate(zip(names, frames))]})
            elif kind == "reset":
                frame = await self._model(self._reset, session, False)
                await ws.send_json(self._frame_msg(session, frame, rid))
            elif kind == "back":
                frame = session.back()
                await ws.send_json(self._frame_msg(session, frame, rid, "back"))
            else:
                raise UserError(f"unknown message type {kind!r} (step, gallery, reset, back)")
        except UserError as e:
            await ws.send_json({"type": "error", "id": rid, "message": str(e)})
        except Exception as e:  # noqa: BLE001 - one bad request must not end the session
            log.exception("play: request failed")
            await ws.send_json({"type": "error", "id": rid,
                                "message": f"internal error ({type(e).__name__}: {e})"})

    # ---- handlers -------------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_UPLOAD_BYTES)
        await ws.prepare(request)
        if len(self.sessions) >= self.settings.max_sessions:
            await ws.send_json({"type": "bye", "message": f"the server is full "
                                f"({self.settings.max_sessions} sessions); try again later"})
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)
            return ws
        session = PlaySession(self.engine, seed=self.settings.seed, number=self.opened,
                              max_history=self.settings.max_history)
        self.opened += 1
        self.sessions[session.id] = session
        self.sockets.add(ws)
        try:
            await ws.send_json(self._hello(session))
            try:
                frame = await self._model(self._reset, session, True)
                await ws.send_json(self._frame_msg(session, frame, None))
            except UserError as e:
                await ws.send_json({"type": "error", "id": None, "message": str(e)})
            while True:
                try:
                    msg = await ws.receive(timeout=self.settings.idle_timeout)
                except asyncio.TimeoutError:
                    await ws.send_json({"type": "bye", "message": "session dropped after "
                                        f"{self.settings.idle_timeout:g} s idle; reload the page"})
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    session.touch()
                    await self._handle(ws, session, msg)
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
        finally:
            self.sessions.pop(session.id, None)
            await ws.close()
        return ws

    async def download(self, request: web.Request) -> web.StreamResponse:
        sid, ext = request.match_info["sid"], request.match_info["ext"]
        session = self.sessions.get(sid)
        if session is None:
            raise web.HTTPNotFound(text="no such session: it was closed or dropped when idle; "
                                        "reload the page")
        try:
            frames = session.video()
        except UserError as e:
            raise web.HTTPConflict(text=str(e)) from None
        body = await asyncio.to_thread(encode_video, frames, ext)
        name = f"genie-play-{len(frames)}frames.{ext}"
        return web.Response(body=body, content_type="image/gif" if ext == "gif" else "video/mp4",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})


def encode_video(frames_THWC: np.ndarray, ext: str, fps: float = 8.0) -> bytes:
    """Upscaled (nearest) GIF/MP4 bytes, through media's writers."""
    H, W = frames_THWC.shape[1:3]
    frames = media.upscale(frames_THWC, media.auto_scale(H, W))
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    with tempfile.TemporaryDirectory(prefix="genie-play-") as d:
        path = media.write_video(os.path.join(d, f"session.{ext}"), frames, fps=fps)
        with open(path, "rb") as f:
            return f.read()
