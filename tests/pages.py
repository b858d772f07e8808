"""Screenshots of synthgate's HTML pages in headless chromium, offline (issue #35).

:func:`shoot` opens each page from disk in Debian's chromium with every host name unresolvable and a dead
proxy, so that a page which needs the network shows it: the resources the page tried to load from
elsewhere are returned, and the test fails on them. Each page is captured at its full height (capped) as a
PNG. `make docs-check` runs the demo's end-to-end test with ``SYNTHGATE_SCREENSHOTS=docs/screenshots``,
which keeps the PNGs there.
"""

from __future__ import annotations

import base64
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")


@dataclass
class Shot:
    title: str
    png: Path
    external: list[str]  # resources the page asked for from outside its own file (must be empty)
    height: int
    text: str  # the page's visible text (the first 20,000 characters)


def available() -> bool:
    return bool(CHROMIUM and DRIVER)


def shoot(pages: dict[str, Path | str], out: Path, width: int = 1200, max_height: int = 7000,
          headers: dict[str, str] | None = None, wait_for: dict[str, str] | None = None) -> dict[str, Shot]:
    """``pages``: name -> HTML file, or an http://127.0.0.1 URL (a local server's UI, sent ``headers``; its
    page waited for until its text holds ``wait_for[name]``); writes ``out/NAME.png`` for each and returns what
    each showed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},900",
              "--disable-gpu", "--no-first-run", "--hide-scrollbars", *OFFLINE):
        opts.add_argument(a)
    out.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    shots: dict[str, Shot] = {}
    try:
        if headers:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})
        for name, path in pages.items():
            local = isinstance(path, str) and path.startswith("http://127.0.0.1")
            driver.get(path if local else Path(path).resolve().as_uri())
            if wait_for and name in wait_for:
                WebDriverWait(driver, 60).until(
                    lambda d, w=wait_for[name]: w in str(d.execute_script("return document.body.innerText")))
            if local:  # a UI's "what's new" dialog over the page
                from selenium.webdriver.common.by import By
                from selenium.webdriver.common.keys import Keys

                driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
                time.sleep(1)
            external = driver.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
                ".filter(n => !n.startsWith('file:') && !n.startsWith('data:') && !n.startsWith('blob:')"
                " && !n.startsWith('http://127.0.0.1'))"
                ".concat(Array.from(document.querySelectorAll('script[src],link[href][rel=stylesheet],img[src]'))"
                ".map(e => e.src || e.href).filter(u => /^(https?:)?\\/\\//.test(u) && !u.startsWith('http://127.0.0.1')))")
            height = min(max_height, int(driver.execute_script(
                "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")))
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            png = out / f"{name}.png"
            data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
            png.write_bytes(base64.b64decode(data["data"]))
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            text = str(driver.execute_script("return document.body.innerText"))[:20000]
            shots[name] = Shot(driver.title, png, sorted(set(external)), height, text)
    finally:
        driver.quit()
    return shots


def blank(png: Path) -> bool:
    """Whether a screenshot is a single colour (nothing rendered)."""
    from PIL import Image

    with Image.open(png) as im:
        lo, hi = im.convert("L").getextrema()
    return lo == hi


def keep_for_docs(png: Path, dst: Path, max_height: int = 1600) -> None:
    """A screenshot as docs/ keeps it: the top of the page (where the decision is), in 256 colours."""
    from PIL import Image

    with Image.open(png) as im:
        top = im.convert("RGB").crop((0, 0, im.width, min(im.height, max_height)))
        top.quantize(colors=256).save(dst, optimize=True)
