"""`vlbridge export`: write a saved model in another library's format (``hf-llava``: transformers LLaVA)."""
from __future__ import annotations

import argparse

FORMATS = ("hf-llava",)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to transformers (LLaVA) for vLLM / SGLang / HF",
                       description=__doc__)
    p.add_argument("--model", required=True, help="saved model dir (e.g. RUN/final)")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="hf-llava: LlavaForConditionalGeneration + its processor (HF vision tower, linear/mlp "
                        "connector, HF causal LM)")
    p.add_argument("--out", required=True, help="output dir (written atomically)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..export.hf_llava import export_llava
    from ..models.vlm import VLBridgeModel
    model = VLBridgeModel.from_pretrained(args.model)
    report = export_llava(model, args.out)
    print(report)
    return 0
