"""The validation page (issue 35): ``data_docs/index.html`` opens offline (nothing under the report
folder loads from the network; Great Expectations' own pages included) and states the verdict of
``validation.json``, accounting for the images dropped after Great Expectations judged them."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from synthgate.config import PrepareConfig, SourceConfig, ValidateConfig
from synthgate.data.canonical import pixel_hashes, write_dataset
from synthgate.data.prepare import prepare
from synthgate.data.validate import validate
from synthgate.data.validation_page import verdict
from synthgate.errors import ValidationFailed
from tests.helpers import make_folder

N_BLANK = 7


@pytest.fixture(scope="module")
def blank_dataset(tmp_path_factory):
    """40 images, 7 of them (training images) blank (constant)."""
    root = tmp_path_factory.mktemp("blank")
    src = make_folder(root / "raw", {"a": 20, "b": 20}, mixed=False)
    ds = prepare(SourceConfig(type="folder", path=src), PrepareConfig(resolution=32), root / "prepared")
    imgs = np.array(ds.images)
    meta = ds.meta.copy()
    # all in train: identical blank images in two splits would also be duplicates across splits
    imgs[np.flatnonzero(meta["split"] == "train")[::4][:N_BLANK]] = 0
    meta["sha256"] = pixel_hashes(imgs)
    return write_dataset(root / "blank", imgs, meta, ds.classes, stage="test", config={}, inputs=[])


@pytest.fixture(scope="module")
def dropped(blank_dataset, tmp_path_factory):
    """The blank images dropped: passes."""
    root = tmp_path_factory.mktemp("dropped")
    r = validate(blank_dataset.root, ValidateConfig(min_images_per_class=5, drop_empty=True), root / "val",
                 root / "rep")
    assert r.passed and r.dropped == {"empty": N_BLANK}
    return root / "rep"


@pytest.fixture(scope="module")
def failing(blank_dataset, tmp_path_factory):
    """The blank images kept: fails."""
    root = tmp_path_factory.mktemp("failing")
    with pytest.raises(ValidationFailed) as e:
        validate(blank_dataset.root, ValidateConfig(min_images_per_class=5), root / "val", root / "rep")
    assert e.value.result.data_docs == root / "rep" / "data_docs" / "index.html"
    return root / "rep"


class _Loads(HTMLParser):
    """What a browser would fetch: link href, script/img/iframe/source/embed src, inline style url()."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "link" and a.get("href"):
            self.urls.append(a["href"] or "")
        if tag in ("script", "img", "iframe", "source", "embed", "video", "audio") and a.get("src"):
            self.urls.append(a["src"] or "")
        self.urls += re.findall(r"url\(\s*['\"]?([^'\")]+)", a.get("style") or "")


def _external(url: str) -> bool:
    return bool(re.match(r"^\s*(https?:)?//", url, re.I))


def _page_text(rep: Path) -> str:
    text = (rep / "data_docs" / "index.html").read_text(encoding="utf-8")
    import html

    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", "", text, flags=re.S))))
    return re.sub(r" ([:.,;)])", r"\1", text)


@pytest.mark.parametrize("case", ["dropped", "failing"])
def test_nothing_under_the_report_folder_loads_from_the_network(case, request):
    rep = request.getfixturevalue(case)
    pages = sorted(rep.rglob("*.html"))
    assert len(pages) >= 3  # synthgate's page and Great Expectations' validation pages
    for page in pages:
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8"))
        assert not [u for u in parser.urls if _external(u)], page
        for css in re.findall(r"<style[^>]*>(.*?)</style>", page.read_text(encoding="utf-8"), re.S):
            assert not [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", css) if _external(u)], page
    for css in rep.rglob("*.css"):
        assert not [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text()) if _external(u)], css
    index = (rep / "data_docs" / "index.html").read_text()
    assert "<script" not in index  # no scripts needed


def test_the_page_says_passed_and_accounts_for_the_dropped_blank_images(dropped):
    report = json.loads((dropped / "validation.json").read_text())
    assert report["passed"] is True and report["dropped"] == {"empty": N_BLANK}
    assert report["data_docs"] == str(dropped / "data_docs" / "index.html")
    blank = next(c for c in report["checks"] if c["name"] == "no empty images")
    assert blank["passed"] and blank["details"]["ge_success"] is False  # GE's raw result, kept
    text = _page_text(dropped)
    assert "✔ PASSED" in text and "FAILED" not in text
    assert verdict(report) in text
    n = report["validated_dataset"]["num_images"]
    assert n == 40 - N_BLANK
    assert (f"Passed: 24 of 25 Great Expectations expectations held on the prepared data; the failing one, no empty "
            f"images (expect_column_values_to_be_between on pixel_std; Great Expectations' synthgate_images page says "
            f"Failed, 22/23), concerned {N_BLANK} blank (constant) images, which were dropped (validate.drop_empty); "
            f"the validated dataset ({n} images) passes all {len(report['checks'])} checks.") in text
    assert "synthgate_images: Great Expectations' own status Failed (22/23)" in text
    # GE's own page still says Failed, and says why beside it
    ge = next((dropped / "data_docs" / "validations").rglob("synthgate-images.html")).read_text()
    assert "Failed" in ge and "before synthgate dropped anything" in ge and "Failed (22/23)" in ge


def test_the_page_says_failed_with_the_failing_check_when_nothing_is_dropped(failing):
    report = json.loads((failing / "validation.json").read_text())
    assert report["passed"] is False and report["dropped"] == {}
    text = _page_text(failing)
    assert "✘ FAILED" in text and "PASSED" not in text
    assert verdict(report) in text
    assert (f"Failed: 1 of {len(report['checks'])} checks failed: no empty images (pixel_std: {N_BLANK} failing "
            "row(s)") in text
    assert "Great Expectations held 24 of 25 expectations. No validated dataset was written." in text


def test_the_verdict_counts_come_from_the_checks():
    """Two GE failures, one cleared by a drop of duplicates and one still failing: the words follow."""
    ge = {"source": "great_expectations"}
    report = {"passed": True, "dropped": {"empty": 1, "duplicates": 2}, "validated_dataset": {"num_images": 9},
              "checks": [{**ge, "name": "no empty images", "passed": True, "summary": "",
                          "details": {"ge_success": False, "suite": "s", "expectation": "e",
                                      "kwargs": {"column": "pixel_std"}}},
                         {**ge, "name": "x", "passed": True, "summary": "ok", "details": {"ge_success": True,
                                                                                          "suite": "s"}},
                         {"source": "synthgate", "name": "no duplicates across splits", "passed": True,
                          "summary": "", "details": {}}]}
    v = verdict(report)
    assert v.startswith("Passed: 1 of 2 Great Expectations expectations held")
    assert "concerned 1 blank (constant) image, which was dropped (validate.drop_empty)" in v
    assert "2 held-out images duplicating images of other splits (validate.drop_duplicates) also dropped" in v
    assert v.endswith("the validated dataset (9 images) passes all 3 checks.")


CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def offline_browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # no network: every host unresolvable and every proxied request sent to a closed port
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900", "--disable-gpu",
              "--no-first-run", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _fetched(driver) -> list[str]:
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def test_the_page_renders_styled_offline_in_chromium(offline_browser, dropped, failing, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    d = offline_browser
    for rep, bg, word in ((dropped, (230, 244, 234), "PASSED"), (failing, (253, 236, 234), "FAILED")):
        d.get((rep / "data_docs" / "index.html").as_uri())
        box = d.find_element(By.ID, "verdict")
        assert word in box.text
        # the page's own CSS is in effect: the verdict box has its background, the checks table its borders
        assert d.execute_script("return getComputedStyle(arguments[0]).backgroundColor", box) == f"rgb{bg}"
        assert d.execute_script("return getComputedStyle(document.querySelector('#checks td')).borderTopStyle") \
            == "solid"
        assert not [u for u in _fetched(d) if not u.startswith("file:")]
        shot = tmp_path / f"{word.lower()}.png"
        assert d.save_screenshot(str(shot))
        px = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
        # the verdict box's colour covers a real area of the screenshot (a blank or unstyled page has none)
        assert (np.abs(px.astype(int) - bg).sum(axis=1) <= 3).sum() > 20_000
    # Great Expectations' raw page: its status icons are drawn (✔/✘ in place of Font Awesome), nothing fetched
    page = next((dropped / "data_docs" / "validations").rglob("synthgate-images.html"))
    d.get(page.as_uri())
    failed_icon = d.find_element(By.CSS_SELECTOR, ".fas.fa-times")
    assert d.execute_script("return getComputedStyle(arguments[0], '::before').content", failed_icon) == '"✘"'
    assert d.execute_script("return getComputedStyle(arguments[0]).color", failed_icon) == "rgb(198, 40, 40)"
    assert "before synthgate dropped anything" in d.find_element(By.CLASS_NAME, "synthgate-banner").text
    assert not [u for u in _fetched(d) if not u.startswith("file:")]
    d.find_element(By.LINK_TEXT, "synthgate's validation page").click()
    assert d.find_element(By.ID, "verdict").text.startswith("✔ PASSED")
