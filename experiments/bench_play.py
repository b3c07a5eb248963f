"""Key-to-frame latency of `genie-jax play` as a browser sees it, and the README screenshot.

  python experiments/bench_play.py --workdir=runs/play_tiny/dyn --out=bench_results/play.json \
      [--presses=30] [--screenshot=docs/play.png]

Starts `genie-jax play` on the run, opens the page in headless Chromium (Debian's chromium and
chromium-driver; `make browser`) and presses keys one at a time. Latency is measured in the
page: performance.now() from keydown to the frame painted (window.playStats.keyToFrameMs).
Two passes:
  paced     the action gallery on; each press waits until the gallery of the current frame has
            arrived (a player looking at the previews), so no press queues behind a gallery
  gallery off   presses back to back, each as soon as the previous frame is painted
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_WORKDIR = flags.DEFINE_string("workdir", None, "a dynamics run")
_OUT = flags.DEFINE_string("out", "bench_results/play.json", "where to write the JSON")
_PRESSES = flags.DEFINE_integer("presses", 30, "key presses per pass")
_SHOT = flags.DEFINE_string("screenshot", "", "save a PNG of the page here (e.g. docs/play.png)")
_SHOT_AFTER = flags.DEFINE_integer("screenshot_after", 4, "presses before the screenshot")
_FLAGS = flags.DEFINE_list("play_flags", [], "extra `genie-jax play` flags, e.g. --seed=1")


def main(argv):
    del argv
    from selenium.webdriver.common.keys import Keys

    from genie_jax.media import write_text
    from genie_jax.play.browser import (Page, browser_missing, chrome, latency_summary,
                                        start_server, stop_server)
    why = browser_missing()
    if why:
        sys.exit(f"bench_play: {why}")
    keys = [Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_UP, Keys.ARROW_LEFT, Keys.SPACE,
            Keys.ARROW_DOWN]
    proc, url, lines = start_server(_WORKDIR.value, *_FLAGS.value)
    driver = None
    try:
        driver = chrome(tempfile.mkdtemp(prefix="bench-play-"), width=1000, height=820)
        page = Page(driver, url)
        page.gallery()
        for i in range(_PRESSES.value):          # paced, gallery on
            page.press(keys[i % len(keys)])
            page.gallery()
            if _SHOT.value and i + 1 == _SHOT_AFTER.value:
                driver.save_screenshot(_SHOT.value)
        s = page.stats()
        paced, gallery_ms, step_ms = s["keyToFrameMs"], s["galleryMs"][1:], s["stepMs"]
        driver.find_element("id", "show-gallery").click()
        n = len(paced)
        for i in range(_PRESSES.value):          # back to back, gallery off
            page.press(keys[i % len(keys)])
        s = page.stats()
        burst = s["keyToFrameMs"][n:]
        errors = page.console_errors() + s["errors"]
    finally:
        if driver is not None:
            driver.quit()
        stop_server(proc)
    result = {"workdir": _WORKDIR.value, "startup": lines[-2:], "browser_errors": errors,
              "paced_gallery_on": latency_summary(paced),
              "model_step_paced": latency_summary(step_ms),
              "gallery_batched_step": latency_summary(gallery_ms),
              "back_to_back_gallery_off": latency_summary(burst)}
    write_text(_OUT.value, json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
