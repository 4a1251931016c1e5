"""LION's staged recipe: declared stages pick their data and parts; each stage resumes exactly; the whole recipe
(encoder, text LM, tagger, tagged data, three stages, per-stage evaluation) runs end to end; evaluation and chat
route each sample by its task type."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from support import tiny_run_config
from vlbridge.connectors.lion import LionConnector, LionOptions
from vlbridge.data.shapesworld import ShapesWorldConfig, generate
from vlbridge.recipes.stages import run_stages

TINY = {"qformer": {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "num_queries": 2},
        "aggregator_heads": 2, "aggregator_intermediate": 32, "region_hidden": 24, "adapter_bottleneck": 4}


@pytest.fixture(scope="module")
def lion_data(tmp_path_factory):
    """Image-level multi-turn records + region-level single-turn records (LION routes per record)."""
    out = tmp_path_factory.mktemp("lion_shapes")
    generate(ShapesWorldConfig(n=30, seed=4, image_size=32, object_size=[0.25, 0.3, 0.35, 0.45], train_turns=3,
                               extra_tasks=["gcap", "rec_neg"], single_turn_tasks=["rec", "reg", "gcap", "rec_neg"],
                               single_turn_records=1), out)
    return out


def lion_run(data, out, **options):
    cfg = tiny_run_config(data, out, steps=2)
    cfg.model.connector.name, cfg.model.connector.options = "lion", {**TINY, "llm_stages": ["image"], **options}
    cfg.train.train_vision = False
    return cfg


def test_stages_pick_data_and_parts():
    stages = LionConnector.stages(LionOptions())
    assert set(stages) >= {"align", "instruct", "image", "region", "mixed", "joint"}
    assert "rec" in stages["region"].tasks and "color" in stages["image"].tasks and stages["mixed"].tasks is None
    assert not set(stages["image"].tasks) & set(stages["region"].tasks)
    assert "llm.*.moa_adapters.0" in stages["image"].trains and "llm.*.moa_adapters.1" in stages["region"].trains
    assert "llm" not in stages["image"].trains                          # LION: the LLM stays frozen
    shared = LionConnector.stages(LionOptions(adapters=1, llm_stages=["image"], soft_prompt=False))
    assert "llm.*.moa_adapters.0" in shared["region"].trains          # one adapter: every stage trains it
    assert "llm" in shared["image"].trains and "embeddings:added" not in shared["image"].trains
    with pytest.raises(ValueError, match="llm_stages"):
        LionConnector(LionOptions(llm_stages=["warmup"]), 16, 24, (2, 2))
    with pytest.raises(ValueError, match="task types"):
        LionConnector(LionOptions(task_types={"rec": "box"}), 16, 24, (2, 2))


@pytest.mark.slow
def test_each_stage_resumes_exactly(lion_data, tmp_path):
    names = ["image", "region", "mixed"]
    straight = lion_run(lion_data, tmp_path / "straight")
    run_stages(straight, names)

    split = lion_run(lion_data, tmp_path / "split")
    split.train.stage_schedules = {"region": {"stop_after": 1}}
    run_stages(split, ["image", "region"])                               # interrupted after region's first step
    assert not (tmp_path / "split" / "region" / "final").exists()
    split.train.stage_schedules = {}
    run_stages(split, names)                                             # region resumes, then mixed runs
    for stage in ("region", "mixed"):
        a = load_file(str(tmp_path / "straight" / stage / "final" / "model.safetensors"))
        b = load_file(str(tmp_path / "split" / stage / "final" / "model.safetensors"))
        assert a.keys() == b.keys()
        assert not [k for k in a if not torch.equal(a[k], b[k])], stage
    # each stage moved what it trains, and left the rest exactly as it was
    image = load_file(str(tmp_path / "straight" / "image" / "final" / "model.safetensors"))
    region = load_file(str(tmp_path / "straight" / "region" / "final" / "model.safetensors"))
    moved = {k for k in region if not torch.equal(image[k], region[k])}
    assert any(k.startswith("connector.aggregator") for k in moved)
    assert any(".moa_adapters.1." in k for k in moved)
    assert not any(k.startswith("connector.qformer") or ".moa_adapters.0." in k or "moa_router" in k for k in moved)
    embeddings = ("embed_tokens", "lm_head")                              # tied: the <soft> row moves
    assert not [k for k in moved if k.startswith("llm.") and "moa_" not in k and not any(e in k for e in embeddings)]


@pytest.mark.slow
def test_recipe_end_to_end(lion_data, tmp_path):
    """The one command: encoder and LLM pretrained, tagger, soft-tagged data, three stages over repeated images
    (several records per image: the frozen features are cached), each evaluated."""
    from vlbridge.cli.main import main
    cfg = lion_run(lion_data, tmp_path / "unused")
    config = tmp_path / "base.json"
    cfg.model.connector.options = {**TINY}
    config.write_text(json.dumps(__import__("dataclasses").asdict(cfg)))
    out = tmp_path / "run"
    schedules = {s: {"steps": 2, "warmup_steps": 1} for s in ("image", "region", "mixed")}
    code = main(["recipe", "lion", "--config", str(config), "--data", str(lion_data), "--out", str(out),
                 "--vision_steps", "2", "--llm_steps", "2", "--tagger_steps", "2", "--tags.mode", "soft",
                 "--train.stages", "image,region,mixed", "--train.stage_schedules", json.dumps(schedules),
                 "--eval.limit", "2", "--eval.max_new_tokens", "4"])
    assert code == 0
    assert (out / "vision" / "vision_pretrain.json").is_file() and (out / "llm" / "model" / "config.json").is_file()
    assert "According to <soft>" in (out / "data" / "test.json").read_text()
    for stage in ("image", "region", "mixed"):
        metrics = json.loads((out / stage / "eval" / "metrics.json").read_text())["metrics"]
        assert {"rec", "color", "caption"} <= set(metrics)
        saved = json.loads((out / stage / "final" / "config.json").read_text())
        assert saved["connector"]["name"] == "lion" and saved["llm"]["arch"]["model_type"] == "llama"
    assert json.loads((out / "region" / "config.json").read_text())["train"]["init_from"] == str(out / "image" / "final")


def test_eval_and_chat_route_by_task_type(lion_data, tiny_model, monkeypatch):
    import copy
    from vlbridge.config import DataConfig
    from vlbridge.data.records import SkipReport
    from vlbridge.eval.runner import predict
    from vlbridge.inference import Predictor
    from vlbridge.models.vlm import VLBridgeModel
    from vlbridge.train.data import load_split, make_dataset
    from support import tiny_model_config
    from PIL import Image
    torch.manual_seed(0)
    model = VLBridgeModel(tiny_model_config("lion", TINY), copy.deepcopy(tiny_model.tokenizer)).eval()
    seen = []
    original = model.connector.task_router.routing
    monkeypatch.setattr(model.connector.task_router, "routing", lambda types: seen.append(types) or original(types))
    report = SkipReport()
    records = [r for r in load_split(lion_data / "test.json", DataConfig(), report) if r.task in ("color", "rec")][:4]
    dataset = make_dataset(records, model, DataConfig(), report, for_generation=True)
    from vlbridge.generate import GenerationConfig
    predict(model, dataset, batch_size=4, gen=GenerationConfig(max_new_tokens=2), progress=False)
    assert seen[-1] == ["image" if r.task == "color" else "region" for r in records]
    Predictor(model, GenerationConfig(max_new_tokens=1), task_type="region").ask("What is here?", [Image.new("RGB", (32, 32))])
    assert seen[-1] == ["region"]


def test_recipe_command_resolves_its_config_and_refuses_bad_input(tmp_path, capsys):
    from vlbridge.cli.main import main
    assert main(["recipe", "lion", "--print-config", "--tags.mode", "hard", "--eval.limit", "7"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"]["model"]["connector"]["name"] == "lion"
    assert printed["run"]["train"]["stages"] == ["image", "region", "mixed"]
    assert printed["lion"]["tags"]["mode"] == "hard" and printed["lion"]["eval"]["limit"] == 7
    assert main(["recipe", "lion", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    assert "is not a dataset dir" in capsys.readouterr().err
    assert main(["lion", "tags", "--tagger", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--tags.mode", "loud"]) == 2
    assert "tags.mode must be one of" in capsys.readouterr().err
