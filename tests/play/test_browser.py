"""`genie-jax play` in a real headless Chromium: keys change the frame, different actions give
different frames, the gallery has one frame per action, a GIF downloads, an image uploads, the
console stays clean. Prints and writes (JSON) the key-to-frame latency the page measured.

Sampling is greedy (--temperature=0) so that a frame depends only on the state and the action:
then two actions giving two frames is the action's doing, not sampling noise, and the frame a key
press shows must equal the gallery's frame for that action.
"""
import io
import json

import numpy as np
import pytest

from genie_jax.play.browser import (Page, browser_missing, chrome, latency_summary, start_server,
                                    stop_server)

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture
def page(fake_dyn, tmp_path):
    proc, url, _ = start_server(fake_dyn, "--temperature=0", "--prompt=0")
    driver = None
    try:
        driver = chrome(str(tmp_path / "downloads"))
        yield Page(driver, url)
    finally:
        if driver is not None:
            driver.quit()
        stop_server(proc)


def test_play_page(page, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.keys import Keys
    hello = page.driver.execute_script("return window.playStats")
    assert hello["step"] == 0
    start = page.frame()

    # The gallery: one frame per latent action, labelled by control name, from this state.
    gallery = page.gallery()
    assert [c for c, _ in gallery] == ["0", "1", "2", "3", "4", "5"]
    assert len({f for _, f in gallery}) > 1, "actions should lead to different next frames"

    right = page.press(Keys.ARROW_RIGHT)           # default keys: ArrowRight -> latent 1
    assert right != start
    assert page.stats()["step"] == 1
    assert page.driver.find_element("id", "action").text == "1"
    assert right == gallery[1][1], "a key press shows the gallery's frame for its action"
    assert len(page.gallery()) == 6

    back = page.click("back")
    assert back == start and page.stats()["step"] == 0
    # Another action from the same state: a different frame where the gallery says it differs.
    other = next(i for i, (_, f) in enumerate(gallery) if f != gallery[1][1])
    key = {0: Keys.ARROW_LEFT, 2: Keys.ARROW_UP, 3: Keys.ARROW_DOWN, 4: Keys.SPACE}.get(other,
                                                                                     str(other))
    assert page.press(key) == gallery[other][1] != right

    for key in [Keys.ARROW_RIGHT, "d", Keys.ARROW_UP, "w", Keys.SPACE, Keys.ARROW_LEFT] * 2:
        page.press(key)
    stats = page.stats()
    assert stats["step"] == 13
    assert not stats["errors"], stats["errors"]

    gif = page.download("download-gif", str(tmp_path / "downloads"), ".gif")
    assert gif[:6] in (b"GIF87a", b"GIF89a")
    assert Image.open(io.BytesIO(gif)).n_frames == 14    # prompt + 13 generated frames

    img = tmp_path / "prompt.png"
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8)[None, :, None] * 6, (30, 1, 3))).save(img)
    page.upload(str(img))
    assert page.driver.find_element("id", "prompt").text == "prompt: uploaded image"
    assert page.stats()["step"] == 0

    assert page.console_errors() == []
    lat = latency_summary(stats["keyToFrameMs"])
    assert lat["presses"] == 14
    report = {"what": "key-to-frame latency in headless Chromium (keydown -> frame painted)",
              "run": "size=test, random params, temperature 0", **lat}
    (tmp_path / "play_latency.json").write_text(json.dumps(report, indent=1))
    print(f"\nplay key-to-frame latency: {json.dumps(report)}")
