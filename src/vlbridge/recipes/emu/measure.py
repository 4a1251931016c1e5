"""Figures of a trained Emu model (with its trained decoder) on a ShapesWorld documents dir's generation items.

- Next frame (``generation.json`` next_frame): the story without its last frame is the prompt; the generated
  frame is judged (``judge.next_frame``): the changing object right (colour, shape and place), the other objects
  there, the whole frame exact. Baselines: copying the last frame of the context, and generating with no context
  (the empty prompt). Bound: the decoder painting the true next frame's own embeddings.
- Text -> image (``generation.json`` text_to_image: the test scenes' captions, as ``lavit measure`` draws them,
  so the figures sit beside LaVIT's on the same scenes): judged by the same checker. Baselines: real renders of
  other scenes, images generated with no caption. Bound: the decoder painting the real scenes' embeddings.
- The compact / lossless / discrete trilemma entry: tokens per image, reconstruction error through the decoder,
  continuous.
- ``samples.png``: per text prompt real | reconstruction | generated at each CFG scale; per story the last
  context frame | the true next frame | generated.
Understanding and few-shot accuracy come from ``vlbridge eval`` on the same dir's test.json.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from ...config import opt
from ...errors import UserError
from ...data.images import load_image
from ...lavit.grid import sample_grid
from ...models.vlm import VLBridgeModel
from ..lavit.tokenizer_stage import encode_split
from .decoder import embed_images
from .image_generation import EmuGenConfig, check_emu, generate_images, paint
from .judge import frame_rates, judge_scenes, next_frame


@dataclass
class EmuMeasureConfig:
    model: str = opt("", "trained Emu model dir with a trained decoder (the output of `vlbridge emu decoder`)")
    data: str = opt("", "ShapesWorld documents dir (`vlbridge data shapes-docs`): generation.json, images")
    out: str = opt("", "report dir: metrics.json, summary.md, samples.png")
    n: int = opt(200, "items of each kind (next frame, text -> image)")
    cfg_scales: list[float] = opt([1.0, 3.0], "classifier-free guidance scales to measure")
    grid: int = opt(8, "items of each kind shown in samples.png")
    seed: int = opt(0, "seed of the decoder's sampling")


def load_generation_items(data: Path) -> dict:
    path = data / "generation.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: make the data with `vlbridge data shapes-docs`")
    return json.loads(path.read_text())


def open_images(data: Path, names: list[str]):
    return [load_image(data / name, where=str(data / name))[0] for name in names]


@torch.no_grad()
def real_embeddings(model, data: Path, entries: list[dict]) -> torch.Tensor:
    """The connector's embeddings of real images ({"image", "objects"} entries)."""
    split = encode_split(model.vision, entries, data, str(data))
    return embed_images(model, split)


@torch.no_grad()
def measure(cfg: EmuMeasureConfig) -> dict:
    if not cfg.model or not cfg.data or not cfg.out:
        raise UserError("emu measure needs --model, --data and --out")
    t0 = time.perf_counter()
    model = VLBridgeModel.from_pretrained(cfg.model)
    check_emu(model)
    data = Path(cfg.data)
    items = load_generation_items(data)
    stories, t2i = items["next_frame"][: cfg.n], items["text_to_image"][: cfg.n]
    figures: dict = {"tokens_per_image": model.visual_tokens_per_image(), "stories": len(stories), "prompts": len(t2i)}
    samples: dict[str, list] = {}

    # text -> image
    prompts = [it["caption"] for it in t2i]
    objects = [it["objects"] for it in t2i]
    real = open_images(data, [it["image"] for it in t2i])
    recon = paint(model, real_embeddings(model, data, t2i), cfg.seed)
    figures["t2i_reconstructions"] = judge_scenes(objects, recon)
    figures["t2i_real_renders"] = judge_scenes(objects, real)
    figures["t2i_other_scenes"] = judge_scenes(objects, real[1:] + real[:1])
    figures["t2i_no_caption"] = judge_scenes(objects, generate_images(model, [""] * len(t2i), gen=EmuGenConfig(seed=cfg.seed)))
    samples["t2i"] = [real, recon]
    for scale in cfg.cfg_scales:
        tg = time.perf_counter()
        images = generate_images(model, prompts, gen=EmuGenConfig(cfg_scale=scale, seed=cfg.seed))
        figures[f"t2i_cfg{scale:g}"] = {**judge_scenes(objects, images),
                                        "seconds_per_image": (time.perf_counter() - tg) / max(len(images), 1)}
        samples["t2i"].append(images)

    # next frame
    targets = [it["target"] for it in stories]
    truth = open_images(data, [t["image"] for t in targets])
    last = open_images(data, [it["last"]["image"] for it in stories])
    bound = paint(model, real_embeddings(model, data, targets), cfg.seed)
    kinds = sorted({it["change"] for it in stories})

    def rates(images) -> dict:
        verdicts = [next_frame(it, im) for it, im in zip(stories, images)]
        out = frame_rates(verdicts)
        for kind in kinds:
            out[kind] = frame_rates([v for v, it in zip(verdicts, stories) if it["change"] == kind])
        return out

    figures["next_frame_real"] = rates(truth)
    figures["next_frame_reconstruction"] = rates(bound)
    figures["next_frame_copy_last"] = rates(last)
    figures["next_frame_no_context"] = rates(generate_images(model, [""] * len(stories), gen=EmuGenConfig(seed=cfg.seed)))
    samples["story"] = [last, truth]
    for scale in cfg.cfg_scales:
        context = [open_images(data, it["images"]) for it in stories]
        images = generate_images(model, [it["text"] for it in stories], context,
                                 EmuGenConfig(cfg_scale=scale, seed=cfg.seed))
        figures[f"next_frame_cfg{scale:g}"] = rates(images)
        samples["story"].append(images)

    t = figures["t2i_reconstructions"]
    figures["trilemma"] = {"tokens_per_image": model.connector.num_tokens(),
                           "tokens_per_image_with_markers": model.visual_tokens_per_image(),
                           "reconstruction_pixel_l1": pixel_l1(recon, real),
                           "reconstruction_exact_scene": t["objects_exact"], "discrete": False}
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    write_report(cfg, figures, samples, prompts, [it["text"].split("\n")[-1] for it in stories])
    return figures


def pixel_l1(images, reference) -> float:
    import numpy as np
    return float(np.mean([np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b.resize(a.size), dtype=np.float32)).mean()
                          for a, b in zip(images, reference)]) / 255)


def write_report(cfg: EmuMeasureConfig, figures: dict, samples: dict, prompts: list[str], story_captions: list[str]) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    show = range(min(cfg.grid, len(prompts)))
    gens = [f"gen cfg {s:g}" for s in cfg.cfg_scales]
    t2i = sample_grid([[col[i] for col in samples["t2i"]] for i in show], [prompts[i] for i in show],
                      ["real", "recon"] + gens)
    show = range(min(cfg.grid, len(story_captions)))
    story = sample_grid([[col[i] for col in samples["story"]] for i in show],
                        [f"after: {story_captions[i]}" for i in show], ["last frame", "true next"] + gens)
    sheet = Image.new("RGB", (max(t2i.width, story.width), t2i.height + story.height), (255, 255, 255))
    sheet.paste(t2i, (0, 0))
    sheet.paste(story, (0, t2i.height))
    sheet.save(out / "samples.png")
    (out / "metrics.json").write_text(json.dumps({"config": asdict(cfg), **figures}, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(figures, cfg) + "\n")


def summary_markdown(f: dict, cfg: EmuMeasureConfig) -> str:
    lines = [f"Emu figures: {f['prompts']} text->image prompts, {f['stories']} next-frame stories", "",
             "| text -> image | colours present | colours exact | every object | exact scene | n |",
             "|---|---:|---:|---:|---:|---:|"]
    rows = [("real renders", "t2i_real_renders"), ("decoder on real embeddings", "t2i_reconstructions")]
    rows += [(f"generated, CFG {s:g}", f"t2i_cfg{s:g}") for s in cfg.cfg_scales]
    rows += [("baseline: other scenes", "t2i_other_scenes"), ("baseline: no caption", "t2i_no_caption")]
    for name, key in rows:
        a = f[key]
        lines.append(f"| {name} | {a['colors_present']:.1%} | {a['colors_exact']:.1%} | {a['objects_present']:.1%} | "
                     f"{a['objects_exact']:.1%} | {a['n']} |")
    lines += ["", "| next frame | changed object right | other objects there | exact frame | n |", "|---|---:|---:|---:|---:|"]
    rows = [("the true frame", "next_frame_real"), ("decoder on its real embeddings", "next_frame_reconstruction")]
    rows += [(f"generated in context, CFG {s:g}", f"next_frame_cfg{s:g}") for s in cfg.cfg_scales]
    rows += [("baseline: copy the last frame", "next_frame_copy_last"), ("baseline: no context", "next_frame_no_context")]
    for name, key in rows:
        a = f[key]
        lines.append(f"| {name} | {a['changed_ok']:.1%} | {a['others_ok']:.1%} | {a['frame_ok']:.1%} | {a['n']} |")
    t = f["trilemma"]
    lines += ["", f"Trilemma: {t['tokens_per_image']} continuous tokens per image (+2 markers); reconstruction through "
                  f"the decoder: pixel L1 {t['reconstruction_pixel_l1']:.4f}, exact scene {t['reconstruction_exact_scene']:.1%}"]
    return "\n".join(lines)
