"""The labelling page of `graft suggest --label` in a real browser: Playwright drives Debian's headless
Chromium against a uvicorn server on loopback, over the session's linear-probe run's suggestions.

Skipped, saying why, where Playwright or a `chromium` executable is missing (as tests/test_serve_browser.py).
"""

from __future__ import annotations

import csv
import shutil

import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH (Debian: apt-get install chromium; .ci/run does it)"),
]

from test_labelling import images, suggested, unlabelled  # noqa: E402,F401  (test_labelling's fixtures, used here)


@pytest.fixture
def served(images, tiny_dataset, tmp_path):  # noqa: F811  (the fixture imported above)
    """(base URL, session): the labelling page over the suggestions, uvicorn in a thread on 127.0.0.1."""
    from conftest import uvicorn_in_thread
    from graft.labelling import LabellingSession
    from graft.serve.labelling import create_labelling_app

    items, classes = images
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    session = LabellingSession(items, classes, labels_csv=tmp_path / "work" / "labels.csv", data=data)
    with uvicorn_in_thread(create_labelling_app(session)) as base:
        yield base, session


@pytest.fixture
def page():
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        yield context.new_page()
        context.close()
        browser.close()


def test_label_three_images_with_clicks_and_keys_then_copy(served, page):
    expect = playwright_api.expect
    base, session = served
    items, classes = session.items, session.classes
    total = len(items)
    page.goto(base)
    expect(page.locator("#progress")).to_have_text(f"0 of {total} labelled")
    expect(page.locator("#title")).to_have_text(f"1 of {total}: {items[0].path.rsplit('/', 1)[-1]}")
    expect(page.locator("#reason")).to_have_text(items[0].reason)
    expect(page.locator("#where")).to_contain_text(str(session.labels_csv.absolute()))
    page.wait_for_function("document.getElementById('picture').naturalWidth > 0")  # the image, served by rank

    page.keyboard.press("1")  # rank 1: the first class, then on to rank 2
    expect(page.locator("#progress")).to_have_text(f"1 of {total} labelled")
    expect(page.locator("#title")).to_contain_text(f"2 of {total}")
    page.locator("#buttons button", has_text=classes[1]).click()  # rank 2: the second class, by its button
    expect(page.locator("#progress")).to_have_text(f"2 of {total} labelled")
    page.keyboard.press("s")  # rank 3: skipped
    expect(page.locator("#progress")).to_have_text(f"2 of {total} labelled, 1 skipped")
    expect(page.locator("#title")).to_contain_text(f"4 of {total}")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#title")).to_contain_text(f"3 of {total}")
    expect(page.locator("#decision")).to_have_text("Skipped")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("3")  # rank 4: the third class
    expect(page.locator("#progress")).to_have_text(f"3 of {total} labelled, 1 skipped")

    with session.labels_csv.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["path", "label"]] + [[f"images/{items[index].path.rsplit('/', 1)[-1]}", classes[label]]
                                          for index, label in ((0, 0), (1, 1), (3, 2))]
    with session.labels_csv.with_name("labels.skipped.csv").open(newline="") as handle:  # the skip is kept
        assert list(csv.reader(handle)) == [["path", "decision"], [f"images/{items[2].path.rsplit('/', 1)[-1]}", "skip"]]
    page.reload()  # a reload shows the decisions made, the skip among them
    expect(page.locator("#progress")).to_have_text(f"3 of {total} labelled, 1 skipped")
    expect(page.locator("#strip button.skipped")).to_have_count(1)

    page.locator("#copy").click()  # asks first
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("3 labelled image(s)")
    before = sorted((session.data / "train").rglob("*"))
    page.locator("#copy-no").click()  # cancelled: nothing copied
    expect(page.locator("#confirm")).to_be_hidden()
    assert sorted((session.data / "train").rglob("*")) == before
    page.locator("#copy").click()
    page.locator("#copy-yes").click()
    expect(page.locator("#copied")).to_contain_text(f"Copied 3 labelled image(s) into {session.data / 'train'}")
    expect(page.locator("#next-step")).to_contain_text(f"Next: graft train {session.data}")
    for index, label in ((0, 0), (1, 1), (3, 2)):
        assert (session.data / "train" / classes[label] / items[index].path.rsplit("/", 1)[-1]).is_file()
    assert not list((session.data / "train").rglob(items[2].path.rsplit("/", 1)[-1]))  # skipped: not copied
    assert len(sorted((session.data / "train").rglob("*"))) == len(before) + 3
