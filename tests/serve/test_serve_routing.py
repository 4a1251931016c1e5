"""Task routing through the server (a mixture of adapters, ``lion``): each request's ``vlbridge.task_type``
routes its own row, so two concurrent requests with different types, batched together, each get the answer
``Predictor`` gives with that type alone; an unknown type is a 400 naming the field."""
from __future__ import annotations

import concurrent.futures
import copy

import openai
import pytest
import torch
from serve_support import LiveServer, serve_config

from support import tiny_model_config
from vlbridge.data.records import Turn
from vlbridge.generate import GenerationConfig
from vlbridge.inference import Predictor, Query
from vlbridge.models.vlm import VLBridgeModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lion_model(tiny_model):
    torch.manual_seed(0)
    cfg = tiny_model_config("lion", {"qformer": {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32,
                                                 "num_queries": 2}, "aggregator_heads": 2, "adapter_bottleneck": 4})
    model = VLBridgeModel(cfg, copy.deepcopy(tiny_model.tokenizer)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                       # every weight drawn, so that the two adapters answer differently
        for name, p in model.llm.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if "moa_adapters" in name else 0.2))
    return model


def test_each_request_is_routed_by_its_own_task_type(lion_model):
    question = "What color is the circle?"
    gen = GenerationConfig(max_new_tokens=8)
    alone = {t: Predictor(lion_model, gen, task_type=t).answer([Query([Turn("user", question)], [])])[0]
             for t in ("image", "region")}
    assert alone["image"] != alone["region"]                    # the types take different adapters
    with LiveServer(lion_model, serve_config(default_max_tokens=8)) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)

        def ask(task_type):
            r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": question}],
                                               extra_body={"vlbridge": {"task_type": task_type}})
            return r.choices[0].message.content

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(ask, ["image", "region", "region", "image"]))
        assert got == [alone["image"], alone["region"], alone["region"], alone["image"]]
        with pytest.raises(openai.BadRequestError, match="unknown task type 'pixels'"):
            ask("pixels")
