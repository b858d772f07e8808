"""The reader study in a real browser (issue 19): Debian's chromium, headless, driven by Selenium
through the system chromedriver (nothing downloaded). Two readers complete a small study, one with
the keyboard and a reload mid-way, the other with the buttons; a third opens a made-up link and then
another reader's finished link; `analyze` then gives the numbers the answers imply."""

from __future__ import annotations

import shutil
import threading

import pytest

from synthgate.evaluation.readers.analyze import analyze_study
from synthgate.evaluation.readers.app import serve
from synthgate.evaluation.readers.store import Answers
from synthgate.evaluation.readers.study import create_study
from synthgate.registry.server import free_port
from tests.unit.test_reader_study import _dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromedriver not installed (make test installs them: apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,800",
              "--disable-gpu", "--no-first-run"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_two_readers_finish_a_study_in_chromium_and_analyze_counts_their_answers(browser, tmp_path):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    IGNORED = (NoSuchElementException, StaleElementReferenceException)  # the page is replaced mid-read

    real = _dataset(tmp_path / "real", {"train": 6, "test": 8})
    syn = _dataset(tmp_path / "syn", {"train": 10}, seed=7, stage="sample")
    study = create_study(real.root, syn.root, tmp_path / "study", n=8, display_size=128)
    key = study.key()
    store = Answers(study)
    ann, bob = store.add_reader("ann"), store.add_reader("bob")
    store.add_reader("eve")  # added, never reads: the admin page and the analysis list her as unfinished
    store.close()
    port = free_port()
    ready, stop = threading.Event(), threading.Event()
    threading.Thread(target=serve, args=(study, "127.0.0.1", port, ready, stop), daemon=True).start()
    assert ready.wait(30)
    base = f"http://127.0.0.1:{port}"

    def progress() -> str:
        return browser.find_element(By.CLASS_NAME, "progress").text

    def current() -> str:
        return browser.find_element(By.NAME, "image_id").get_attribute("value")

    def answer_next(right: bool, keyboard: bool, confidence: str | None = None) -> None:
        before = progress()
        img = browser.find_element(By.TAG_NAME, "img")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 16
        assert img.size["width"] == 128  # shown at the study's display size
        truth = "real" if key[current()]["real"] else "synthetic"
        choice = truth if right else ("synthetic" if truth == "real" else "real")
        if keyboard:
            body = browser.find_element(By.TAG_NAME, "body")
            if confidence:
                body.send_keys(confidence)
            body.send_keys(choice[0])
        else:
            browser.find_element(By.ID, choice).click()
        WebDriverWait(browser, 10, ignored_exceptions=IGNORED).until(
            lambda d: "Thank you" in d.page_source or progress() != before)

    try:
        browser.get(f"{base}/r/{ann.token}")
        assert "image 1 of 8" in progress()
        browser.save_screenshot(str(tmp_path / "reading.png"))
        for _ in range(3):
            answer_next(right=True, keyboard=True, confidence="4")
        shown = current()
        browser.refresh()  # a reload mid-way: the same image, the count kept
        assert current() == shown and "image 4 of 8" in progress()
        for _ in range(5):
            answer_next(right=True, keyboard=True)
        assert "All 8 images are answered" in browser.page_source

        browser.get(f"{base}/r/{bob.token}")
        for k in range(8):  # bob calls the first four wrong
            answer_next(right=k >= 4, keyboard=False)
        assert "Thank you, bob" in browser.page_source

        def shows(text: str) -> bool:  # the page as loaded (a loaded machine renders late: wait, up to 30 s)
            WebDriverWait(browser, 30, ignored_exceptions=IGNORED).until(lambda b: text in b.page_source)
            return True

        browser.get(f"{base}/r/made-up-token")  # eve guesses a link
        assert shows("Unknown reader link")
        browser.get(f"{base}/r/{ann.token}")  # and opens ann's: finished, nothing to answer or change
        assert shows("All 8 images are answered") and not browser.find_elements(By.TAG_NAME, "form")
        browser.get(f"{base}/admin/{study.admin_token()}")
        assert shows("2 reader(s) finished") and "eve" in browser.page_source
    finally:
        stop.set()
    assert (tmp_path / "reading.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = analyze_study(study)
    assert res["per_reader"]["ann"]["accuracy"] == 1.0
    fs = sum(key[i]["real"] for i in bob.order[:4])  # the real images among the four bob called wrong
    assert res["per_reader"]["bob"] == {"TR": 4 - fs, "FR": 4 - fs, "TS": fs, "FS": fs, "n": 8, "accuracy": 0.5}
    assert res["unfinished"] == {"eve": "0/8"}
    store = Answers(study)
    conf = sorted(str(c) for (c,) in store._db.execute(
        "SELECT a.confidence FROM answers a JOIN readers r USING (token) WHERE r.name = 'ann'"))
    store.close()
    assert conf == ["4", "4", "4"] + ["None"] * 5  # the keyboard's confidence, optional
