"""The play server in-process (aiohttp test client): protocol, errors, isolation, timeouts."""
import asyncio
import io
import json

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from genie_jax.play.server import PlaySettings, PlayServer


def _serve(engine, clips, test, **settings):
    """Run `test(client, server)` against a fresh server on a free local port."""
    server = PlayServer(engine, clips, PlaySettings(**settings), workdir="runs/x")

    async def main():
        async with TestClient(TestServer(server.app())) as client:
            return await test(client, server)
    return asyncio.run(main())


async def _open(client):
    ws = await client.ws_connect("/ws")
    hello = await ws.receive_json(timeout=60)
    first = await ws.receive_json(timeout=60)
    assert hello["type"] == "hello" and first["type"] == "frame"
    return ws, hello, first


async def _ask(ws, msg):
    await (ws.send_bytes(msg) if isinstance(msg, bytes) else
           ws.send_str(msg if isinstance(msg, str) else json.dumps(msg)))
    return await ws.receive_json(timeout=60)


def test_protocol_and_bad_input(greedy_engine, clips):
    async def test(client, server):
        page = await client.get("/")
        assert page.status == 200 and "play.js" in await page.text()
        assert (await client.get("/static/play.js")).status == 200
        ws, hello, first = await _open(client)
        assert [c["name"] for c in hello["controls"]] == ["0", "1", "2", "3", "4", "5"]
        assert hello["keys"]["ArrowRight"] == "1" and hello["num_actions"] == 6
        assert first["step"] == 0 and first["frame"].startswith("data:image/png;base64,")
        errors = [await _ask(ws, m) for m in (
            {"type": "step", "action": "JUMP", "id": 1}, "{not json", '["step"]',
            {"type": "fly", "id": 2}, {"type": "step", "id": 3},
            {"type": "step", "action": "1,2", "id": 4}, {"type": "step", "action": 9, "id": 5},
            {"type": "back", "id": 6}, b"\x89PNG but not really")]
        assert all(e["type"] == "error" for e in errors), errors
        msgs = [e["message"] for e in errors]
        assert "unknown action 'JUMP'" in msgs[0] and "malformed message" in msgs[1]
        assert "malformed" in msgs[2] and "unknown message type 'fly'" in msgs[3]
        assert 'needs "action"' in msgs[4] and "one action per step" in msgs[5]
        assert "outside [0, 6)" in msgs[6] and "nothing to step back" in msgs[7]
        assert "not a readable PNG or JPEG" in msgs[8]
        assert errors[0]["id"] == 1
        # The session goes on after all that.
        step = await _ask(ws, {"type": "step", "action": "1", "id": 7})
        assert step["type"] == "frame" and step["step"] == 1 and step["id"] == 7
        gallery = await _ask(ws, {"type": "gallery", "id": 8})
        assert [g["name"] for g in gallery["frames"]] == ["0", "1", "2", "3", "4", "5"]
        assert gallery["step"] == 1
        png = io.BytesIO()
        Image.fromarray(np.full((40, 70, 3), 200, np.uint8)).save(png, format="PNG")
        up = await _ask(ws, png.getvalue())
        assert up["type"] == "frame" and up["prompt"] == "uploaded image" and up["step"] == 0
        reset = await _ask(ws, {"type": "reset", "id": 9})
        assert reset["type"] == "frame" and reset["prompt"].startswith("test episode")
        await _ask(ws, {"type": "step", "action": "0", "id": 10})
        gif = await client.get(f"/session/{hello['session']}/download.gif")
        body = await gif.read()
        assert gif.status == 200 and body[:6] == b"GIF89a"
        assert Image.open(io.BytesIO(body)).n_frames == 2
        mp4 = await client.get(f"/session/{hello['session']}/download.mp4")
        assert mp4.status == 200 and (await mp4.read())[4:8] == b"ftyp"
        assert (await client.get("/session/nope/download.gif")).status == 404
        await ws.close()
    _serve(greedy_engine, clips, test)


def test_tabs_have_their_own_worlds(greedy_engine, clips):
    async def test(client, server):
        (a, ha, _), (b, hb, fb) = await _open(client), await _open(client)
        assert ha["session"] != hb["session"] and len(server.sessions) == 2
        for act in ("1", "2", "3"):
            assert (await _ask(a, {"type": "step", "action": act}))["step"] > 0
        # b never saw a's frames: it is still at its prompt and steps from there.
        assert (await _ask(b, {"type": "step", "action": "0"}))["step"] == 1
        back = await _ask(b, {"type": "back"})
        assert back["frame"] == fb["frame"] and back["step"] == 0
        await a.close()
        await asyncio.sleep(0.2)
        assert list(server.sessions) == [hb["session"]]   # a closed tab's session is gone
        await b.close()
    _serve(greedy_engine, clips, test)


def test_idle_sessions_are_dropped_and_sessions_are_capped(greedy_engine, clips):
    async def test(client, server):
        ws, hello, _ = await _open(client)
        full = await client.ws_connect("/ws")
        bye = await full.receive_json(timeout=10)
        assert bye["type"] == "bye" and "full" in bye["message"]
        bye = await ws.receive_json(timeout=10)       # idle_timeout below
        assert bye["type"] == "bye" and "idle" in bye["message"]
        assert (await ws.receive(timeout=10)).type.name in ("CLOSE", "CLOSED")
        assert server.sessions == {}
        assert (await client.get(f"/session/{hello['session']}/download.gif")).status == 404
    _serve(greedy_engine, clips, test, idle_timeout=1.0, max_sessions=1)


def test_named_controls_from_an_action_map(greedy_engine, clips):
    """A fitted action map: the page gets control names and keys, steps by name, and the
    gallery labels each latent action by the control(s) mapped to it."""
    from genie_jax.action_map import ActionMap, default_keys
    from genie_jax.play.session import PlayEngine
    names = ("LEFT", "RIGHT", "UP", "NOOP")
    amap = ActionMap(names=names, latent=(3, 1, 1, 0), keys=default_keys(names), source="fit",
                     num_actions=6)
    engine = PlayEngine(greedy_engine.wm, amap)

    async def test(client, server):
        ws, hello, _ = await _open(client)
        assert [c["name"] for c in hello["controls"]] == list(names)
        assert hello["keys"]["ArrowLeft"] == "LEFT" and hello["keys"]["ArrowUp"] == "UP"
        step = await _ask(ws, {"type": "step", "action": "left"})
        assert step["type"] == "frame" and step["action"] == "LEFT"
        gallery = await _ask(ws, {"type": "gallery"})
        assert [g["name"] for g in gallery["frames"]] == ["NOOP", "RIGHT/UP", "2", "LEFT", "4",
                                                          "5"]
        # LEFT is latent 3: its frame is the gallery's frame for latent 3 (greedy sampling).
        await _ask(ws, {"type": "back"})
        gallery0 = await _ask(ws, {"type": "gallery"})
        again = await _ask(ws, {"type": "step", "action": "LEFT"})
        assert again["frame"] == gallery0["frames"][3]["frame"]
        await ws.close()
    _serve(engine, clips, test)
