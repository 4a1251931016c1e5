"""Grounded and image answers through the server: a region-token (groma) answer's boxes in the ``vlbridge``
extension, streamed and not, as ``decode_answers`` writes them; a LaVIT answer that opens an image comes
back as a data-URL image part holding the image ``lavit.image_generation`` paints for the same prompt."""
from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image
from serve_support import LiveServer, force, png_data_url, redraw, serve_config

from vlbridge.data.images import load_image

from vlbridge.data.records import Turn, load_records
from vlbridge.generate import GenerationConfig, generate_from
from vlbridge.data.grounded_phrases import grounded_phrases
from vlbridge.grounding.region_tokens import ROI_END, ROI_START, region_token
from vlbridge.inference import Predictor, Query
from vlbridge.recipes.lavit.image_generation import ImageGenConfig, generate_codes_after, render_codes
from vlbridge.lavit.vocabulary import VisualVocab

pytestmark = pytest.mark.slow


def test_grounded_answers_carry_their_boxes(groma_model, grounding_data):
    model = redraw(groma_model, seed=1)
    tok = model.tokenizer
    roi, end, r0 = tok.convert_tokens_to_ids([ROI_START, ROI_END, region_token(0)])
    forced = force({2: roi, 3: r0, 4: end})
    image = load_image(load_records(grounding_data / "test.json")[0].images[0])[0]
    question = "Describe the image briefly, with a box for each object."
    ids, pixels = Predictor(model).encode(Query([Turn("user", "<image>\n" + question)], [image]))
    s, _ = model.embed([ids], None, pixels, padding_side="left")
    out = generate_from(model, s, GenerationConfig(max_new_tokens=10), logits_processors=[forced])
    expected = model.decode_answers(out, s.info)[0]
    pairs = grounded_phrases(expected)
    assert pairs, expected                                     # region 0 became box text
    with LiveServer(model, serve_config(default_max_tokens=10)) as srv:
        srv.scheduler.engine.processors.append(forced)
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(image)}},
                                                 {"type": "text", "text": question}]}]
        r = client.chat.completions.create(model="tiny", messages=messages)
        message = r.choices[0].message
        assert message.content == expected
        boxes = message.model_extra["vlbridge"]["boxes"]
        assert [(b["phrase"], b["box"]) for b in boxes] == [(p, pytest.approx(list(b), abs=1e-4)) for p, b in pairs]
        chunks = list(client.chat.completions.create(model="tiny", messages=messages, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
        assert chunks[-1].choices[0].delta.model_extra["vlbridge"]["boxes"] == boxes
        with pytest.raises(openai.BadRequestError, match="one image"):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": messages[0]["content"]
                                                                    + messages[0]["content"][:1]}])


def test_an_answer_that_opens_an_image_returns_the_painted_image(lavit_model):
    vocab = VisualVocab.from_model(lavit_model)
    opens = force({0: vocab.open_id})
    prompt, _ = Predictor(lavit_model).encode(Query([Turn("user", "Draw a red circle")], []))
    codes = generate_codes_after(lavit_model, [prompt.tolist() + [vocab.open_id]], None, ImageGenConfig(cfg_scale=2.0))
    expected, unguided = render_codes(lavit_model, codes + generate_codes_after(
        lavit_model, [prompt.tolist() + [vocab.open_id]], None, ImageGenConfig(cfg_scale=1.0)))
    assert expected.tobytes() != unguided.tobytes()                    # the image shows what was generated
    with LiveServer(lavit_model, serve_config(cfg_scale=2.0)) as srv:
        srv.scheduler.engine.processors.insert(0, opens)
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Draw a red circle"}])
        parts = r.choices[0].message.content
        assert [p["type"] for p in parts] == ["image_url"]
        url = parts[0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        got = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert got.size == expected.size and got.tobytes() == expected.tobytes()
        assert r.usage.completion_tokens == len(codes[0]) + 2          # [IMG], the codes, [/IMG]
        assert srv.app.state.scheduler.writer is not None
        other = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Draw a red circle"}],
                                               extra_body={"vlbridge": {"cfg_scale": 1.0}})
        assert other.choices[0].message.content[0]["image_url"]["url"] != url   # guidance reaches the writer


def test_an_emu_answer_that_opens_an_image_returns_the_regressed_and_painted_image(tiny_model):
    """An Emu model's answer that writes [IMG]: the server regresses the M embeddings after it and returns the
    image the connector's decoder paints, the same as ``emu.image_generation`` for that prompt."""
    import copy

    import torch

    from support import emu_config
    from vlbridge.models.vlm import VLBridgeModel
    from vlbridge.recipes.emu.image_generation import EmuGenConfig, generate_embeddings_after, paint
    torch.manual_seed(0)
    model = VLBridgeModel(emu_config(), copy.deepcopy(tiny_model.tokenizer)).eval()
    open_id = model.tokenizer.convert_tokens_to_ids(model.connector.wrap_tokens[0])
    prompt, _ = Predictor(model).encode(Query([Turn("user", "Draw a red circle")], []))
    emb = generate_embeddings_after(model, [prompt.tolist() + [open_id]], None, EmuGenConfig())
    expected = paint(model, emb)[0]
    with LiveServer(model, serve_config()) as srv:
        srv.scheduler.engine.processors.insert(0, force({0: open_id}))
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Draw a red circle"}])
        parts = r.choices[0].message.content
        assert [p["type"] for p in parts] == ["image_url"]
        got = Image.open(io.BytesIO(base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1])))
        assert got.size == expected.size and got.tobytes() == expected.tobytes()
        assert r.usage.completion_tokens == model.connector.num_tokens() + 2     # [IMG], M embeddings, [/IMG]
