"""Export to transformers' ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` (servable by vLLM / SGLang).

A vlbridge model maps onto LLaVA when its vision encoder is a Hugging Face ViT-style tower (CLIP, SigLIP:
hidden states of tokens), its connector is ``linear`` or a 2-layer ``mlp`` whose hidden width is the LLM's, its
LLM is a Hugging Face causal LM and its images take sequential positions. Then:

- vision tower, LLM and LM head are copied as they are (LoRA merged first);
- the projector is LLaVA's ``linear_1 -> act -> linear_2``: the mlp's two layers with GELU, or for ``linear``
  its layer then an identity (``projector_hidden_act="linear"``, ``linear_2 = I``, exact in floating point);
- ``vision.feature_layers`` -> ``vision_feature_layer``; dropping the CLS token (``keep_cls: false``) is
  LLaVA's ``"default"`` strategy, keeping it (or an encoder without one) is ``"full"``;
- one ``<image>`` of vlbridge's prompt is expanded by the processor into the image's tokens, the same
  positions LLaVA then fills with the projected features (vlbridge splices them there);
- the image processor resizes to the square input size with bicubic resampling and no crop, rescales and
  normalises with the model's mean and std (``data.image_transform.ImageTransform``);
- the chat template renders vlbridge's template (``chat_template.py``); ``generation_config.json`` stops on
  the template's end-of-turn token and EOS.

Any other connector is refused with the reason. The export is checked before it is written: the processor's
prompt ids for a probe conversation must equal vlbridge's (a mismatch is reported as a warning).
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from PIL import Image

from ..data.records import Turn
from ..data.template import IMAGE_TOKEN
from ..errors import UserError
from ..models.vlm import replace_dir
from .chat_template import jinja_chat_template

TOKEN_TOWERS = ("clip_vision_model", "siglip_vision_model")


def llava_plan(model) -> dict:
    """How the model maps onto LLaVA; a ValueError saying why when it does not."""
    name, opts = model.cfg.connector.name, model.connector.options
    vision_type = model.vision.model.config.model_type
    if name not in ("linear", "mlp"):
        raise UserError(f"connector {name!r} has no LLaVA equivalent: LlavaForConditionalGeneration projects every "
                         "patch with a 2-layer MLP (vlbridge 'linear' or 'mlp'); it cannot resample, pool, select or "
                         "add tokens as this connector does")
    if name == "mlp" and opts.depth not in (1, 2):
        raise UserError(f"mlp connector of depth {opts.depth}: LLaVA's projector has exactly 2 linear layers")
    if name == "mlp" and opts.depth == 2 and opts.hidden not in (None, model.llm_dim):
        raise UserError(f"mlp connector with hidden width {opts.hidden}: LLaVA's projector has the LLM's width "
                         f"({model.llm_dim}) between its layers")
    if vision_type not in TOKEN_TOWERS:
        raise UserError(f"vision encoder {vision_type!r}: LLaVA takes a ViT-style tower whose hidden states are "
                         f"tokens ({', '.join(TOKEN_TOWERS)})")
    if model.cfg.llm.image_positions != "sequential":
        raise UserError(f"llm.image_positions {model.cfg.llm.image_positions!r}: LLaVA numbers visual tokens "
                         "sequentially")
    rows, cols = model.vision.grid
    n_prefix = 1 if vision_type == "clip_vision_model" else 0
    keep_cls = bool(model.cfg.vision.keep_cls)
    layers = list(model.cfg.vision.feature_layers)
    return {"strategy": "full" if keep_cls or n_prefix == 0 else "default", "n_prefix": n_prefix,
            "layers": layers[0] if len(layers) == 1 else layers, "tokens": rows * cols + (n_prefix if keep_cls else 0),
            "patch_size": model.vision.patch_size, "linear": name == "linear" or opts.depth == 1,
            "bias": opts.bias if name == "linear" else True}


def _projector_layers(model) -> list[torch.nn.Linear]:
    conn = model.connector
    return [conn.proj] if model.cfg.connector.name == "linear" else [m for m in conn.net if isinstance(m, torch.nn.Linear)]


def build_llava(model):
    """The transformers LLaVA model holding this model's weights (LoRA merged)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    plan = llava_plan(model)
    llm = model.llm
    if model.lora:
        llm = copy.deepcopy(llm).merge_and_unload()
    text_config = copy.deepcopy(llm.config)
    text_config.vocab_size = llm.get_input_embeddings().num_embeddings
    config = LlavaConfig(vision_config=copy.deepcopy(model.vision.model.config).to_dict(), text_config=text_config.to_dict(),
                         image_token_id=model.image_token_id, image_seq_length=plan["tokens"],
                         projector_hidden_act="linear" if plan["linear"] else "gelu",
                         vision_feature_select_strategy=plan["strategy"], vision_feature_layer=plan["layers"],
                         multimodal_projector_bias=plan["bias"],
                         tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)))
    llava = LlavaForConditionalGeneration(config).eval()
    llava.model.vision_tower.load_state_dict(model.vision.model.state_dict())
    llava.model.language_model.load_state_dict(llm.get_decoder().state_dict())
    with torch.no_grad():
        llava.lm_head.weight.copy_(llm.get_output_embeddings().weight)
        proj = llava.model.multi_modal_projector
        layers = _projector_layers(model)
        proj.linear_1.weight.copy_(layers[0].weight)
        if plan["linear"]:
            proj.linear_2.weight.copy_(torch.eye(proj.linear_2.weight.shape[0]))
            if layers[0].bias is not None:
                proj.linear_1.bias.copy_(layers[0].bias)
                proj.linear_2.bias.zero_()
        else:
            proj.linear_1.bias.copy_(layers[0].bias)
            proj.linear_2.weight.copy_(layers[1].weight)
            proj.linear_2.bias.copy_(layers[1].bias)
    return llava


def build_processor(model, plan: dict):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    size = model.vision.image_size
    images = CLIPImageProcessorPil(size={"height": size, "width": size}, do_center_crop=False, do_resize=True,
                                   resample=Image.BICUBIC, image_mean=model.vision.image_mean,
                                   image_std=model.vision.image_std, do_rescale=True, rescale_factor=1 / 255,
                                   do_normalize=True, do_convert_rgb=True)
    return LlavaProcessor(image_processor=images, tokenizer=copy.deepcopy(model.tokenizer),
                          patch_size=plan["patch_size"], vision_feature_select_strategy=plan["strategy"],
                          chat_template=jinja_chat_template(model.template), image_token=IMAGE_TOKEN,
                          num_additional_image_tokens=plan["n_prefix"])


def probe_mismatch(model, processor, plan: dict) -> str | None:
    """Compare the processor's prompt ids with vlbridge's for a probe conversation; None when equal."""
    turns = [Turn("system", "Be brief."), Turn("user", "<image>\nWhat is this?"), Turn("assistant", "A red circle."),
             Turn("user", "And its size?")]
    ids, _ = model.builder.build(turns, for_generation=True)
    expanded = [t for i in ids for t in ([i] * plan["tokens"] if i == model.image_token_id else [i])]
    messages = [{"role": t.role, "content": [{"type": "image"}, {"type": "text", "text": t.text.split("\n", 1)[1]}]
                 if t.text.startswith(IMAGE_TOKEN) else t.text} for t in turns]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.new("RGB", (model.vision.image_size,) * 2)
    got = processor(text=text, images=[image], return_tensors="pt", add_special_tokens=False)["input_ids"][0].tolist()
    if got == expanded:
        return None
    return (f"the processor's prompt ids differ from vlbridge's for a probe conversation ({len(got)} vs "
            f"{len(expanded)} ids): the chat template's text tokenizes differently in one piece than vlbridge's "
            "marker-by-marker building, so answers may differ")


def export_llava(model, out: str | Path) -> str:
    """Write ``out`` (atomically) with the LLaVA model, processor and generation config; returns a report."""
    from transformers import GenerationConfig
    plan = llava_plan(model)
    llava = build_llava(model)
    processor = build_processor(model, plan)
    warning = probe_mismatch(model, processor, plan)
    stops = model.builder.stop_token_ids()
    tok = model.tokenizer
    llava.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.bos_token_id, do_sample=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    llava.save_pretrained(str(tmp))
    processor.save_pretrained(str(tmp))
    replace_dir(tmp, out)
    lines = [f"exported {model.cfg.connector.name} model to {out} (transformers LlavaForConditionalGeneration)",
             f"  vision {model.vision.model.config.model_type}, layer {plan['layers']}, strategy {plan['strategy']}, "
             f"{plan['tokens']} tokens per image; projector {'linear' if plan['linear'] else 'gelu'}; "
             f"LLM {llava.config.text_config.model_type}",
             "  load: AutoModelForImageTextToText.from_pretrained(DIR), AutoProcessor.from_pretrained(DIR)"]
    if warning:
        lines.append("  warning: " + warning)
    return "\n".join(lines)
