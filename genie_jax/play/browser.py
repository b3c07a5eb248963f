"""Drive the `genie-jax play` page in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, through selenium): used by tests/play/test_browser.py and
experiments/bench_play.py. Nothing here downloads a browser or a driver.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

URL_LINE = re.compile(r"open (http://\S+) in a browser")


def browser_missing() -> str | None:
    """Why a browser session cannot run here (None when it can)."""
    for exe in ("chromium", "chromedriver"):
        if shutil.which(exe) is None:
            return (f"{exe} is not on PATH: `make browser` (apt-get install chromium "
                    "chromium-driver) installs it")
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def start_server(workdir: str, *flags: str, timeout: float = 180.0, env=None, cwd=None):
    """`python -m genie_jax play --workdir=... --port=0 FLAGS` -> (process, url, startup lines)."""
    e = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
             PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "genie_jax", "play", f"--workdir={workdir}",
                             "--port=0", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=e, cwd=cwd)
    lines, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        m = URL_LINE.search(line)
        if m:
            return proc, m.group(1), lines
    proc.kill()
    raise RuntimeError("genie-jax play did not start:\n" + "\n".join(lines[-30:]))


def stop_server(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chrome(download_dir: str, width: int = 1000, height: int = 900):
    """Headless Chromium with browser console logging and downloads into download_dir."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch anything
    os.makedirs(download_dir, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.add_experimental_option("prefs", {"download.default_directory": download_dir,
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": download_dir})
    return driver


class Page:
    """The play page in one tab: press keys, wait for frames, read what the page measured."""

    def __init__(self, driver, url: str, timeout: float = 60.0):
        from selenium.webdriver.support.ui import WebDriverWait
        self.driver, self.timeout = driver, timeout
        self.wait = lambda cond, t=None: WebDriverWait(driver, t or timeout, 0.02).until(cond)
        driver.get(url)
        self.wait(lambda d: self.stats().get("ready") and self.stats()["frames"] >= 1)

    def stats(self) -> dict:
        return self.driver.execute_script("return window.playStats || {}")

    def frame(self) -> str:
        """The displayed frame (a PNG data URL)."""
        return self.driver.execute_script("return document.getElementById('screen').src")

    def _after(self, do, count: int = 1) -> str:
        n = self.stats()["frames"]
        do()
        self.wait(lambda d: self.stats()["frames"] >= n + count)
        return self.frame()

    def press(self, key: str) -> str:
        """Press one key (selenium Keys or a character); wait until the new frame is painted."""
        from selenium.webdriver.common.action_chains import ActionChains
        return self._after(lambda: ActionChains(self.driver).send_keys(key).perform())

    def click(self, element_id: str) -> str:
        return self._after(lambda: self.driver.find_element("id", element_id).click())

    def upload(self, path: str) -> str:
        return self._after(
            lambda: self.driver.find_element("id", "upload").send_keys(os.path.abspath(path)))

    def gallery(self) -> list[tuple[str, str]]:
        """(caption, frame data URL) per gallery entry, once the gallery is of the current
        frame."""
        self.wait(lambda d: self.stats()["galleryStep"] == self.stats()["step"])
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#gallery figure')].map("
            "f => [f.querySelector('figcaption').textContent, f.querySelector('img').src])")

    def console_errors(self) -> list[str]:
        return [f"{e.get('level')}: {e.get('message')}" for e in self.driver.get_log("browser")
                if e.get("level") == "SEVERE"]

    def download(self, element_id: str, folder: str, ext: str, timeout: float = 30.0) -> bytes:
        """Click a download link; -> the bytes of the file that lands in `folder`."""
        before = set(os.listdir(folder))
        self.driver.find_element("id", element_id).click()
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            new = [f for f in set(os.listdir(folder)) - before if f.endswith(ext)]
            if new:
                with open(os.path.join(folder, new[0]), "rb") as f:
                    return f.read()
            time.sleep(0.05)
        raise TimeoutError(f"no {ext} file downloaded into {folder} in {timeout:g} s")


def latency_summary(ms: list[float]) -> dict:
    a = np.asarray(ms, np.float64)
    if not a.size:
        return {"presses": 0}
    return {"presses": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1), "mean_ms": round(float(a.mean()), 1),
            "max_ms": round(float(a.max()), 1)}
