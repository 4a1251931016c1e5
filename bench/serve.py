"""The server under load: 16 concurrent streaming clients against `vlbridge serve`, batched vs one at a time,
and generation tokens/s at batch 1 with and without the KV cache, all measured in one run.

The model is the demo's architecture (``tiny-cpu`` preset: tiny ResNet + pixel shuffle + 4-layer Llama), or
``--model DIR`` (e.g. runs/demo/final after `make demo`). Without --model the weights are random and the
tokenizer is trained on a small generated ShapesWorld, so every answer runs to ``--max-tokens`` (requests
set the ``vlbridge.ignore_eos`` extension in both modes, so both generate the same number of tokens).

The server runs as a subprocess (`vlbridge serve`, its own cores and GIL); each client thread streams one
request at a time with an image (a ShapesWorld picture as a data URL) and a question, ``--requests`` per
client. Batched = ``--max-batch 32`` (continuous batching); one at a time = ``--max-batch 1`` (requests queue
and are decoded alone). Reported: completion tokens/s and requests/s, p50/p95 latency and time to first
token, and the ratio of the two throughputs. The KV-cache figures time ``vlbridge.generate`` in-process.

    python bench/serve.py [--model DIR] [--clients 16] [--requests 3] [--max-tokens 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_model(work: Path):
    """The tiny-cpu architecture with random weights and a tokenizer trained on a small ShapesWorld."""
    import torch

    from vlbridge.data.records import load_records
    from vlbridge.data.shapesworld import ShapesWorldConfig, generate
    from vlbridge.models.build import build_model
    from vlbridge.presets import PRESETS
    generate(ShapesWorldConfig(n=200, seed=0), work / "shapes")
    torch.manual_seed(0)
    records = load_records(work / "shapes" / "train.json")
    model = build_model(PRESETS["tiny-cpu"]().model, [t.text for r in records for t in r.turns])
    model.save_pretrained(work / "model")
    return work / "model", [r.images[0] for r in records[:16]]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def stream_one(port: int, body: bytes) -> tuple[float, float, int]:
    """(seconds to the first content chunk, seconds in all, completion tokens) of one streamed request."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    first, tokens = None, 0
    for line in resp:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk.get("choices", []):
            if first is None and choice["delta"].get("content"):
                first = time.perf_counter() - start
    conn.close()
    return first if first is not None else float("nan"), time.perf_counter() - start, tokens


def load(port: int, bodies: list[bytes], clients: int, requests: int) -> dict:
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        barrier.wait()
        for j in range(requests):
            try:
                r = stream_one(port, bodies[(k * requests + j) % len(bodies)])
                with lock:
                    results.append(r)
            except Exception as e:                                   # counted and reported, not hidden
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r[2] for r in results)
    return {"wall": wall, "tokens_per_s": tokens / wall, "requests_per_s": len(results) / wall,
            "p50": percentile([r[1] for r in results], 0.5), "p95": percentile([r[1] for r in results], 0.95),
            "ttft50": percentile([r[0] for r in results], 0.5), "ttft95": percentile([r[0] for r in results], 0.95),
            "errors": errors, "n": len(results), "tokens": tokens}


def serve(model_dir: Path, port: int, max_batch: int, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vlbridge", "serve", "--model", str(model_dir), "--port", str(port),
           "--max-batch", str(max_batch), "--threads", str(threads), "--served-model-name", "bench",
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def kv_cache_speed(model_dir: Path, image: str, max_new: int, threads: int) -> dict:
    import torch

    from vlbridge.data.records import Turn, load_image
    from vlbridge.generate import GenerationConfig, generate
    from vlbridge.inference import Predictor, Query
    from vlbridge.models.vlm import VLBridgeModel
    torch.set_num_threads(threads)
    model = VLBridgeModel.from_pretrained(model_dir)
    ids, pixels = Predictor(model).encode(Query([Turn("user", "<image>\nDescribe the image.")], [load_image(image)[0]]))
    never = [len(model.tokenizer) + 1]
    out = {}
    for use_cache in (True, False, True, False):                     # interleaved; the best of two each
        gen = GenerationConfig(max_new_tokens=max_new, use_cache=use_cache)
        start = time.perf_counter()
        generate(model, [ids], pixels, gen, stop_token_ids=never)
        rate = max_new / (time.perf_counter() - start)
        key = "cached" if use_cache else "uncached"
        out[key] = max(out.get(key, 0.0), rate)
    out["prompt_tokens"] = len(ids) + model.visual_tokens_per_image() - 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="saved model dir (default: the tiny-cpu architecture, random weights)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=3, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the server and of the KV-cache timing (default: 1; on a busy 2-core "
                         "machine two threads spin and slow tiny models down)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            from vlbridge.data.records import load_records
            model_dir = Path(args.model)
            images = [r.images[0] for r in load_records(Path("data/shapes/test.json"))[:16]]
        else:
            model_dir, images = demo_model(Path(tmp))
        questions = ["What color is the circle?", "How many objects are there?", "Describe the image.",
                     "What shape is left of the square?"]
        bodies = []
        for i, path in enumerate(images):
            url = "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()
            bodies.append(json.dumps({
                "model": "bench", "max_tokens": args.max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, "vlbridge": {"ignore_eos": not args.model},
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                         {"type": "text", "text": questions[i % 4]}]}]}).encode())
        figures = {}
        for name, max_batch in (("one at a time", 1), ("batched", 32)):
            port = free_port()
            proc = serve(model_dir, port, max_batch, args.threads)
            try:
                stream_one(port, bodies[0])                          # warm up
                figures[name] = load(port, bodies, args.clients, args.requests)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        kv = kv_cache_speed(model_dir, images[0], 64, args.threads)
    print(f"model: {args.model or 'tiny-cpu architecture, random weights'}; {args.clients} clients x "
          f"{args.requests} streamed requests, {args.max_tokens} tokens each; torch threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| mode | completion tok/s | requests/s | p50 latency s | p95 latency s | p50 TTFT s | p95 TTFT s | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        print(f"| {name} | {f['tokens_per_s']:.1f} | {f['requests_per_s']:.2f} | {f['p50']:.2f} | {f['p95']:.2f} | "
              f"{f['ttft50']:.2f} | {f['ttft95']:.2f} | {len(f['errors'])} |")
    ratio = figures["batched"]["tokens_per_s"] / figures["one at a time"]["tokens_per_s"]
    print(f"\nbatched / one at a time throughput: {ratio:.2f}x")
    print(f"generation at batch 1 ({kv['prompt_tokens']}-token prompt, 64 new tokens): "
          f"KV cache {kv['cached']:.1f} tok/s, full recompute {kv['uncached']:.1f} tok/s "
          f"({kv['cached'] / kv['uncached']:.2f}x)")
    for name, f in figures.items():
        for e in f["errors"][:3]:
            print(f"error ({name}): {e}")


if __name__ == "__main__":
    main()
