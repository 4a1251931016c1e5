"""The server end to end on loopback, with the official `openai` client: plain, streamed, image parts, several
images, multi-turn; every refusal as a 4xx in OpenAI's error shape; 32 concurrent clients answered as each
alone; a client that disconnects frees its row."""
from __future__ import annotations

import http.client
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from PIL import Image
from serve_support import LiveServer, png_data_url, serve_config

from vlbridge.data.images import load_image

from vlbridge.data.records import Turn, load_records
from vlbridge.generate import GenerationConfig
from vlbridge.inference import Predictor, Query
from vlbridge.serve.config import ImageLimits

pytestmark = pytest.mark.slow
MAX_NEW = 12


@pytest.fixture(scope="module")
def images(shapes_dir):
    records = load_records(shapes_dir / "train.json")
    return [load_image(r.images[0])[0] for r in records[:8]]


@pytest.fixture(scope="module")
def server(answering_model):
    limits = ImageLimits(max_images=3, max_bytes=200_000)
    with LiveServer(answering_model, serve_config(max_prompt_tokens=120, images=limits)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def user(text: str, images=()):
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in images]
            + [{"type": "text", "text": text}]}


def alone(model, turns: list[Turn], images) -> str:
    """The same question answered by vlbridge's Predictor, without the server."""
    return Predictor(model, GenerationConfig(max_new_tokens=MAX_NEW)).answer([Query(turns, list(images))])[0]


def test_plain_streamed_images_and_multi_turn_answers_are_vlbridge_answers(client, answering_model, images):
    cases = [
        ([{"role": "user", "content": "What shapes do you know?"}], [Turn("user", "What shapes do you know?")], []),
        ([user("What color is the circle?", images[:1])], [Turn("user", "<image>\nWhat color is the circle?")],
         images[:1]),
        ([user("Which one has more objects?", images[1:3])],
         [Turn("user", "<image>\n<image>\nWhich one has more objects?")], images[1:3]),
        ([{"role": "system", "content": "Answer briefly."}, user("What is left of the square?", images[3:4]),
          {"role": "assistant", "content": "a circle"}, {"role": "user", "content": "And its color?"}],
         [Turn("system", "Answer briefly."), Turn("user", "<image>\nWhat is left of the square?"),
          Turn("assistant", "a circle"), Turn("user", "And its color?")], images[3:4]),
    ]
    answers = []
    for messages, turns, imgs in cases:
        expected = alone(answering_model, turns, imgs)
        r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=MAX_NEW)
        assert r.choices[0].message.content == expected
        assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
        ids, _ = Predictor(answering_model).encode(Query(turns, list(imgs)))
        visual = len(imgs) * (answering_model.visual_tokens_per_image() - 1)
        assert r.usage.prompt_tokens == len(ids) + visual
        assert 1 <= r.usage.completion_tokens <= MAX_NEW
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=MAX_NEW, stream=True,
                                                     stream_options={"include_usage": True}))
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
        answers.append(expected)
    assert len(set(answers)) == len(answers)                     # the prompts and images really matter


def test_sampling_with_a_seed_repeats_and_stop_strings_cut(client):
    msgs = [{"role": "user", "content": "Describe the scene."}]
    a, b, c = (client.chat.completions.create(model="tiny", messages=msgs, max_tokens=MAX_NEW, temperature=1.5,
                                              seed=s).choices[0].message.content for s in (5, 5, 6))
    assert a == b and a != c
    full = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=MAX_NEW).choices[0].message.content
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=MAX_NEW, stop=[stop])
    assert cut.choices[0].message.content == full[:full.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_models_health_and_the_model_card(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/v1/models")
    card = json.loads(conn.getresponse().read())["data"][0]["vlbridge"]
    assert card["connector"] == "mlp" and card["visual_tokens_per_image"] == 16 and card["parameters"]["total"] > 0
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read())["status"] == "ok"


def raw_post(port: int, body: bytes, path: str = "/v1/chat/completions") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def bomb_url() -> str:
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")             # 64 Mpixels in a few kB
    return "data:image/png;base64," + __import__("base64").b64encode(buf.getvalue()).decode()


def truncated_url() -> str:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buf, format="PNG")
    data = buf.getvalue()
    return "data:image/png;base64," + __import__("base64").b64encode(data[: len(data) // 2]).decode()


def image_msg(url: str) -> list:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "What is it?"}]}]


BAD = {
    "malformed JSON": (b'{"model": "tiny", "messages": [', 400, None),
    "messages not a list": ({"model": "tiny", "messages": "hello"}, 400, "messages"),
    "temperature as text": ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
                            400, "temperature"),
    "max_tokens as text": ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"},
                           400, "max_tokens"),
    "unknown role": ({"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
    "unknown model": ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    "n > 1": ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    "oversized base64": ({"model": "tiny", "messages": image_msg("data:image/png;base64," + "A" * 400_000)}, 400,
                         "messages[0].content[0]"),
    "decompression bomb": ({"model": "tiny", "messages": image_msg(bomb_url())}, 400, "messages[0].content[0]"),
    "truncated image": ({"model": "tiny", "messages": image_msg(truncated_url())}, 400, "messages[0].content[0]"),
    "remote URL while disabled": ({"model": "tiny", "messages": image_msg("https://example.com/cat.png")}, 400,
                                  "messages[0].content[0]"),
    "local path": ({"model": "tiny", "messages": image_msg("/etc/passwd")}, 400, "messages[0].content[0]"),
    "too many images": ({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png_data_url(Image.new("RGB", (8, 8)))}}] * 4}]}, 400, "messages"),
    "prompt over the limit": ({"model": "tiny", "messages": [{"role": "user", "content": "circle " * 200}]}, 400,
                              "messages"),
    "max_tokens over the context": ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                     "max_tokens": 100_000}, 400, "max_tokens"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, client, case):
    body, status, param = BAD[case]
    got, answer = raw_post(server.port, body if isinstance(body, bytes) else json.dumps(body).encode())
    assert got == status, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["message"]
    assert answer["error"]["param"] == param and "Traceback" not in answer["error"]["message"]
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices[0].message.content is not None


def test_a_private_address_is_refused_while_remote_images_are_enabled(answering_model):
    with LiveServer(answering_model, serve_config(images=ImageLimits(remote_domains=("localhost",)))) as srv:
        status, answer = raw_post(srv.port, json.dumps({"model": "tiny", "messages": image_msg(
            f"http://localhost:{srv.port}/static/index.html")}).encode())
    assert status == 400 and answer["error"]["code"] == "image_url_private_address", answer


def test_32_concurrent_clients_get_each_their_answer_alone(server, client, answering_model, images):
    questions = ["What color is the circle?", "How many objects are there?", "What shape is the red object?",
                 "Is there a square?"]
    jobs = [(questions[i % 4], images[i % len(images)], 4 + (i * 5) % 9) for i in range(32)]
    expected = [Predictor(answering_model, GenerationConfig(max_new_tokens=n)).answer(
        [Query([Turn("user", "<image>\n" + q)], [im])])[0] for q, im, n in jobs]
    assert len(set(expected)) > 8
    start = threading.Barrier(32)

    def ask(job):
        q, im, n = job
        start.wait()
        return client.chat.completions.create(model="tiny", messages=[user(q, [im])], max_tokens=n)

    peak_before = server.scheduler.peak_batch
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(ask, jobs))
    assert [r.choices[0].message.content for r in results] == expected
    assert peak_before < 8 <= server.scheduler.peak_batch          # they were decoded together


def paced(engine, seconds: float = 0.003):
    """Each decoding step takes at least ``seconds`` (a model this small decodes a 480-token answer before the
    event loop has noticed anything, which a real model does not)."""
    def pace(logits, generated):
        time.sleep(seconds)
        return logits
    engine.processors.append(pace)
    return pace


def test_a_client_that_disconnects_frees_its_row(server):
    engine = server.scheduler.engine
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Tell me everything."}],
                       "max_tokens": 480, "stream": True, "vlbridge": {"ignore_eos": True}}).encode()
    pace = paced(engine)
    try:
        for _ in range(2):                                      # the freed row serves the next one
            _disconnect_while_streaming(server, engine, body)
    finally:
        engine.processors.remove(pace)


def _disconnect_while_streaming(server, engine, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    while True:                                         # until the first generated text arrives
        line = resp.readline()
        if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            break
    steps = engine.steps
    assert server.scheduler.running == 1                # still generating (its answer is 480 tokens)
    conn.sock.close()
    conn.close()
    deadline = time.monotonic() + 10
    while server.scheduler.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.scheduler.running == 0
    assert engine.steps - steps < 470                   # it stopped before its 480 tokens


def test_a_waiting_client_that_disconnects_frees_its_row(server):
    """The same without streaming: the handler notices the closed connection while it waits for the answer."""
    engine = server.scheduler.engine
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Tell me everything."}],
                       "max_tokens": 480, "vlbridge": {"ignore_eos": True}}).encode()
    pace = paced(engine)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        steps = engine.steps
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + 10
        while server.scheduler.running == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        assert server.scheduler.running == 1
        conn.sock.close()
        while server.scheduler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.scheduler.running == 0
        assert engine.steps - steps < 470
    finally:
        engine.processors.remove(pace)
