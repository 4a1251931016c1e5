"""The web demo in a real browser: the operating system's Chromium, driven by Playwright through its executable
path (never a downloaded browser). Upload an image, ask for a grounded caption, watch the answer stream in,
and see its boxes drawn where the answer puts them; the model card shows the model's parts."""
from __future__ import annotations

import os
import shutil

import pytest
from serve_support import GROUNDED_ANSWER, LiveServer, force, overfit, serve_config

from vlbridge.data.images import load_image

from vlbridge.data.records import Turn, load_records
from vlbridge.data.grounded_phrases import grounded_phrases

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("VLBRIDGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
QUESTION = "Describe the image briefly, with a box for each object."


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.skip("no Chromium on this machine (install the distribution's `chromium` package; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def test_upload_ask_stream_and_see_the_boxes(browser, untied_tiny_model, shapes_dir, tmp_path):
    image_path = load_records(shapes_dir / "train.json")[0].images[0]
    image = load_image(image_path)[0]
    model = overfit(untied_tiny_model, [Turn("user", "<image>\n" + QUESTION), Turn("assistant", GROUNDED_ANSWER)],
                    image)
    with LiveServer(model, serve_config(default_max_tokens=96)) as srv:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.url + "/")
        page.wait_for_selector("#card-connector")
        assert page.text_content("#card-connector") == "mlp"
        page.set_input_files("#image-input", str(image_path))
        page.wait_for_selector("#stage.has-image")
        page.fill("#max-tokens", "96")
        page.click("#grounded")
        answer = page.wait_for_selector(".msg.assistant[data-done=true]", timeout=30_000)
        assert answer.query_selector(".text").text_content() == GROUNDED_ANSWER
        assert int(answer.get_attribute("data-chunks")) > 10             # streamed, piece by piece
        pairs = grounded_phrases(GROUNDED_ANSWER)
        boxes = page.query_selector_all("#boxes .box")
        assert [b.text_content() for b in boxes] == [p for p, _ in pairs]
        shown = page.query_selector("#preview").bounding_box()
        for element, (_, (x1, y1, x2, y2)) in zip(boxes, pairs):
            drawn = element.bounding_box()                                 # where the box sits over the image
            assert drawn["x"] == pytest.approx(shown["x"] + x1 * shown["width"], abs=2)
            assert drawn["y"] == pytest.approx(shown["y"] + y1 * shown["height"], abs=2)
            assert drawn["width"] == pytest.approx((x2 - x1) * shown["width"], abs=2)
            assert drawn["height"] == pytest.approx((y2 - y1) * shown["height"], abs=2)
        page.fill("#prompt", "And what else?")                            # a follow-up turn works too
        page.press("#prompt", "Enter")
        page.wait_for_selector(".msg.assistant:nth-of-type(4)[data-done=true]", timeout=30_000)
        assert len(page.query_selector_all(".msg.error")) == 0
        page.screenshot(path=os.environ.get("VLBRIDGE_DEMO_SCREENSHOT", str(tmp_path / "demo.png")))
        assert not errors


def test_a_generated_image_appears_in_the_answer(browser, lavit_model):
    from vlbridge.lavit.vocabulary import VisualVocab
    with LiveServer(lavit_model, serve_config()) as srv:
        srv.scheduler.engine.processors.insert(0, force({0: VisualVocab.from_model(lavit_model).open_id}))
        page = browser.new_page()
        page.goto(srv.url + "/")
        page.wait_for_selector("#card-connector")
        assert "images" in page.text_content("#card")                     # the card says the model draws
        page.fill("#prompt", "Draw a red circle")
        page.press("#prompt", "Enter")
        image = page.wait_for_selector(".msg.assistant[data-done=true] img.generated", timeout=30_000)
        assert image.evaluate("img => img.complete && img.naturalWidth") == 32   # a decoded 32 px PNG
