"""graft serve's web page in a real browser: Playwright drives Debian's headless Chromium against a
uvicorn server on loopback serving the session's linear-probe run.

Skipped, saying why, where Playwright or a `chromium` executable is missing; `.ci/run` installs
both (Playwright through the test extra, chromium with apt), so CI runs these tests.
"""

from __future__ import annotations

import contextlib
import shutil

import pytest

pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH (Debian: apt-get install chromium; .ci/run does it)"),
]


@pytest.fixture(scope="module")
def served(linear_probe_run):
    """(base URL, classifier, engine): uvicorn in a thread of this process, on 127.0.0.1 and a free port."""
    import graft

    with _serving(graft.load(linear_probe_run.run_dir), "lp") as served:
        yield served


@pytest.fixture(scope="module")
def served_multilabel(tiny_multilabel, tmp_path_factory):
    """The same, serving a linear probe trained on several labels per image."""
    import graft
    from conftest import FAST

    run = graft.train(tiny_multilabel, strategy="linear-probe", out=tmp_path_factory.mktemp("ml-serve"), name="ml",
                      **{**FAST, "head_epochs": 8})
    with _serving(graft.load(run.run_dir), "ml") as served:
        yield served


@contextlib.contextmanager
def _serving(classifier, name: str):
    from conftest import uvicorn_in_thread
    from graft.serve import create_app

    app = create_app(classifier, name=name)
    try:
        with uvicorn_in_thread(app) as base:
            yield base, classifier, app.state.batcher.engine
    finally:
        app.state.batcher.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    yield context.new_page()
    context.close()


def _loaded(image) -> bool:
    return image.evaluate("img => img.complete && img.naturalWidth > 0")


def test_upload_shows_class_bars_and_activation_map(served, page, tiny_dataset):
    base, classifier, engine = served
    path = sorted((tiny_dataset / "val" / "green").glob("*.png"))[0]
    expected = classifier.predict(path, top_k=3, engine=engine)[0]
    page.goto(base)
    playwright_api.expect(page.locator("#model-info")).to_contain_text("linear-probe")
    playwright_api.expect(page.locator("#model-info")).to_contain_text(", ".join(classifier.classes))
    page.set_input_files("#file", str(path))
    card = page.locator("article.card").first
    playwright_api.expect(card.locator(".label")).to_have_text(expected.label, timeout=30_000)
    bars = card.locator(".bar")
    assert bars.count() == len(classifier.classes)
    assert bars.first.get_attribute("aria-label") == f"{expected.label}: {100 * expected.probability:.1f}%"
    heatmap = card.locator(".cam img.heatmap")
    playwright_api.expect(heatmap).to_be_visible()
    assert _loaded(heatmap) and _loaded(card.locator(".cam img").first)
    assert "activation map" in heatmap.get_attribute("alt")
    card.locator(".cam input[type=range]").fill("90")  # the slider sets the map's opacity
    assert float(heatmap.evaluate("img => img.style.opacity")) == pytest.approx(0.9)


def test_drop_several_images_and_a_bad_file(served, page, tiny_dataset):
    """Dropped files (a DataTransfer, as a drag from the desktop makes): each gets its own card, a file
    that is not an image gets the server's message, and the others still get their answers."""
    base, classifier, engine = served
    paths = [sorted((tiny_dataset / "val" / name).glob("*.png"))[1] for name in ("red", "blue")]
    expected = {f"{p.parent.name}-{p.name}": pred.label for p, pred in zip(paths, classifier.predict(paths, top_k=1, engine=engine))}
    page.goto(base)
    files = [{"name": f"{p.parent.name}-{p.name}", "bytes": list(p.read_bytes()), "type": "image/png"} for p in paths]
    files.append({"name": "notes<b>.txt", "bytes": list(b"just some text"), "type": "text/plain"})
    page.evaluate("""files => {
        const transfer = new DataTransfer();
        for (const f of files) transfer.items.add(new File([new Uint8Array(f.bytes)], f.name, {type: f.type}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", files)
    cards = page.locator("article.card")
    playwright_api.expect(cards).to_have_count(3)
    for name, label in expected.items():
        card = cards.filter(has_text=name)
        playwright_api.expect(card.locator(".label")).to_have_text(label, timeout=30_000)
        playwright_api.expect(card.locator(".cam img.heatmap")).to_be_visible()
    bad = cards.filter(has_text="notes<b>.txt")  # shown as text, never as markup
    playwright_api.expect(bad.locator(".error")).to_contain_text("not an image")
    assert bad.locator("b").count() == 0


def test_a_multilabel_model_shows_every_label_over_its_threshold(served_multilabel, page, tiny_multilabel):
    base, classifier, engine = served_multilabel
    paths = sorted((tiny_multilabel.parent / "images").glob("*.png"))[:8]
    answers = classifier.predict(paths, top_k=5, engine=engine)
    path, expected = next((p, a) for p, a in zip(paths, answers) if len(a.labels) >= 2)  # an image with two labels
    page.goto(base)
    playwright_api.expect(page.locator("#model-info")).to_contain_text("several labels per image")
    playwright_api.expect(page.locator("#model-info")).to_contain_text("val mAP")
    page.set_input_files("#file", str(path))
    card = page.locator("article.card").first
    playwright_api.expect(card.locator(".label")).to_have_text(", ".join(expected.labels), timeout=30_000)
    given = card.locator(".bar.given")
    assert given.count() == len(expected.labels)
    assert [given.nth(i).locator(".name").text_content() for i in range(given.count())] == expected.labels
    assert card.locator(".bar").count() == len(classifier.classes)
    heatmap = card.locator(".cam img.heatmap")
    playwright_api.expect(heatmap).to_be_visible()
    assert heatmap.get_attribute("alt").endswith(expected.labels[0])  # the most likely label's map first
    buttons = card.locator(".cam .which button")
    assert [buttons.nth(i).text_content() for i in range(buttons.count())] == expected.labels
    buttons.nth(1).click()  # each label's map, one click away
    playwright_api.expect(heatmap).to_have_attribute("alt", f"{heatmap.get_attribute('alt').split(' map for ')[0]} map for "
                                                            f"{expected.labels[1]}")
    playwright_api.expect(card.locator(".cam figcaption")).to_contain_text(expected.labels[1])


def test_an_unknown_image_is_said_to_be_of_none_of_the_classes(tiny_dataset, tmp_path_factory, browser, tmp_path):
    """A run with a score of unknown images: the page says "none of the 3 classes" plainly for a
    checkerboard, and names the likeliest class beside it."""
    import graft
    from conftest import FAST
    from test_unknown_runs import checkerboard, save_png

    run = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path_factory.mktemp("unknown-serve"), name="u",
                      known_recall=0.9, **FAST)
    image = save_png(checkerboard(), tmp_path / "checkerboard.png")
    with _serving(graft.load(run.run_dir), "u") as (base, classifier, engine):
        expected = classifier.predict(image, engine=engine)[0]
        assert expected.unknown
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        try:
            page = context.new_page()
            page.goto(base)
            page.set_input_files("#file", str(image))
            card = page.locator("article.card").first
            playwright_api.expect(card.locator(".label")).to_have_text("none of the 3 classes", timeout=30_000)
            playwright_api.expect(card.locator("[data-testid=unknown-note]")).to_contain_text(f"Most like: {expected.label}")
        finally:
            context.close()
