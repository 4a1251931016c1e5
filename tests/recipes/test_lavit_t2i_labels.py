"""Text-to-image records train the LLM to write images: every code token of the answer (and [IMG], [/IMG]) is a
supervised target all the way to the loss, and only the answer is."""
from __future__ import annotations

import json

import torch

from support import tiny_model_config
from vlbridge.config import DataConfig
from vlbridge.data.dataset import collate
from vlbridge.data.records import SkipReport, load_records
from vlbridge.data.template import IGNORE_INDEX
from vlbridge.lavit.vocabulary import VisualVocab
from vlbridge.models.build import build_model
from vlbridge.recipes.lavit.prepare import PrepareConfig, generation_records
from vlbridge.train.data import make_dataset

OPTIONS = {"codebook_size": 16, "image_size": 32, "heads": 2, "merger_layers": 1, "decoder_layers": 1,
           "pixel_channels": [16, 8, 8]}


def test_code_tokens_of_text_to_image_records_get_training_labels(shapes_dir, tmp_path):
    scenes = [s for s in json.loads((shapes_dir / "scenes.json").read_text()) if s["split"] == "train"][:2]
    codes = [[3, 0, 15, 7], [9, 9, 2]]
    records = generation_records(scenes, codes, PrepareConfig(captions_per_image=1, uncond_share=0.0))
    (tmp_path / "t2i.json").write_text(json.dumps(records))
    torch.manual_seed(0)
    texts = [t.text for r in load_records(shapes_dir / "train.json") for t in r.turns]
    model = build_model(tiny_model_config("lavit", OPTIONS), texts + [r["conversations"][0]["value"] for r in records])
    vocab = VisualVocab.from_model(model)
    report = SkipReport()
    loaded = load_records(tmp_path / "t2i.json", shapes_dir, report=report)
    batch = collate([make_dataset(loaded, model, DataConfig(), report)[i] for i in range(len(loaded))])
    spliced, _ = model.embed(batch.input_ids, batch.labels, batch.pixel_values)
    for row, seq in enumerate(codes):
        labels = spliced.labels[row]
        supervised = labels[labels != IGNORE_INDEX].tolist()
        image = [vocab.open_id, *vocab.to_ids(seq), vocab.close_id]
        assert supervised[:len(image)] == image                        # the image, code by code, is the target
        assert len(supervised) - len(image) <= 2                        # then only the turn's end (eos / suffix)
        caption_ids = model.tokenizer(records[row]["conversations"][0]["value"], add_special_tokens=False)["input_ids"]
        assert not set(caption_ids) & set(supervised)                  # the prompt is never a target
    # ... and the loss reaches them: the code rows of the (tied) embedding get a gradient, unused codes none
    model.train()
    model.zero_grad()
    model(batch).loss.backward()
    grad = model.llm.get_input_embeddings().weight.grad
    used = sorted({c for seq in codes for c in seq})
    unused = [c for c in range(vocab.size) if c not in used]
    assert all(grad[vocab.first_code_id + c].abs().sum() > 0 for c in used)
    out = model.llm.get_output_embeddings()
    if out is not None and out.weight is model.llm.get_input_embeddings().weight:
        # tied: every code row gets the softmax's push-down, the used ones also the pull-up of their target
        assert all(grad[vocab.first_code_id + c].norm() > grad[vocab.first_code_id + u].norm()
                   for c in used for u in unused)
