"""Figures for the closing note of a trained LaVIT model, on a ShapesWorld split (default: test).

- Tokens kept per image: mean, spread, range, Pearson correlation with the object count, mean per count.
- Reconstruction: feature cosine (continuous codes and quantized codes), pixel L1 / PSNR of tokenizer ->
  feature decoder -> pixel decoder; codebook usage (perplexity, used/unused codes, EMA-dead codes).
- Text->image: the split's scenes captioned (``captions.caption``), images generated per CFG scale, judged
  by the checker: every prompt object present (colour + shape), exactly those objects, named sizes, named
  relation, all of it ("full"). The same checker on the real renders and on the tokenizer's reconstructions
  (real codes -> pixels) bounds what generation can reach. Two baselines say what ignoring the prompt
  scores: real renders of *other* scenes judged against each prompt, and images generated with no caption.
- The compact / lossless / discrete trilemma: tokens per image, reconstruction error, discrete or not.
- A PNG grid: real render | reconstruction from its codes | generated image, per prompt.
Understanding accuracy comes from ``vlbridge eval`` (same test records as every other connector).
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...config import opt
from ...errors import UserError
from ...models.vlm import VLBridgeModel
from ...data.scene_captions import caption, parse_prompt
from ...eval.image_checker import SMALL_LARGE_SPLIT, Agreement, agreement, detect_objects, size_split
from ...lavit.grid import sample_grid
from .image_generation import ImageGenConfig, generate_images, render_codes, to_image
from .tokenizer_stage import encode_split, load_scenes, recon_features, tokenizer_metrics


@dataclass
class MeasureConfig:
    model: str = opt("", "trained LaVIT model dir (e.g. RUN/final)")
    data: str = opt("", "ShapesWorld dir (scenes.json)")
    out: str = opt("", "report dir: metrics.json, summary.md, samples.png")
    split: str = opt("test", "scenes of this split")
    prompts: int = opt(200, "text->image prompts (captions of the split's first scenes)")
    cfg_scales: list[float] = opt([1.0, 3.0], "classifier-free guidance scales to measure")
    sample: bool = opt(False, "sample codes (temperature 1) instead of greedy decoding")
    grid: int = opt(16, "prompts shown in samples.png")
    seed: int = opt(0, "seed of captions and sampling")


def agreement_rates(items: list[Agreement]) -> dict[str, float]:
    n = max(len(items), 1)
    return {"objects_present": sum(a.objects_present for a in items) / n,
            "objects_exact": sum(a.objects_exact for a in items) / n,
            "sizes_ok": sum(a.sizes_ok for a in items) / n,
            "relation_ok": sum(a.relation_ok for a in items) / n,
            "full": sum(a.full for a in items) / n,
            "object_recall": sum(a.object_recall for a in items) / n,
            "colors_present": sum(a.colors_present for a in items) / n,
            "colors_exact": sum(a.colors_exact for a in items) / n, "n": len(items)}


def judge(prompts: list[str], images, split: float = SMALL_LARGE_SPLIT) -> list[Agreement]:
    return [agreement(parse_prompt(p), detect_objects(im, split=split)) for p, im in zip(prompts, images)]


def dataset_size_split(data_dir: Path) -> float:
    """The small/large threshold of the dataset (its shapesworld.json), else the ShapesWorld default."""
    meta = data_dir / "shapesworld.json"
    if meta.is_file():
        return size_split(json.loads(meta.read_text())["config"]["object_size"])
    return SMALL_LARGE_SPLIT


@torch.no_grad()
def measure(cfg: MeasureConfig) -> dict:
    if not cfg.model or not cfg.data or not cfg.out:
        raise UserError("lavit measure needs --model, --data and --out")
    t0 = time.perf_counter()
    model = VLBridgeModel.from_pretrained(cfg.model)
    tok = model.connector.visual_tokenizer
    data_dir = Path(cfg.data)
    scenes = [s for s in load_scenes(data_dir / "scenes.json") if s.get("split") == cfg.split]
    if not scenes:
        raise UserError(f"{data_dir / 'scenes.json'}: no scenes with split {cfg.split!r}")
    data = encode_split(model.vision, scenes, data_dir, str(data_dir / "scenes.json"))
    figures = {"split": cfg.split, "tokenizer": tokenizer_metrics(tok, data)}

    rng = random.Random(cfg.seed)
    n = min(cfg.prompts, len(scenes))
    prompts = [caption(s["objects"], rng) for s in scenes[:n]]
    real = [to_image(p) for p in data.pixels[:n]]
    _, real_codes = recon_features(tok, data.features[:n])
    recon = render_codes(model, real_codes)
    split = dataset_size_split(data_dir)
    figures["checker_real_renders"] = agreement_rates(judge(prompts, real, split))
    figures["checker_tokenizer_reconstructions"] = agreement_rates(judge(prompts, recon, split))
    figures["checker_other_scenes"] = agreement_rates(judge(prompts, real[1:] + real[:1], split))
    unconditional, _ = generate_images(model, [""] * n, ImageGenConfig(do_sample=cfg.sample, seed=cfg.seed))
    figures["unconditional_cfg1"] = agreement_rates(judge(prompts, unconditional, split))
    generated, verdicts = {}, {}
    for scale in cfg.cfg_scales:
        gen = ImageGenConfig(cfg_scale=scale, do_sample=cfg.sample, seed=cfg.seed)
        images, codes = generate_images(model, prompts, gen)
        judged = judge(prompts, images, split)
        generated[scale], verdicts[scale] = images, [a.full for a in judged]
        figures[f"text_to_image_cfg{scale:g}"] = {**agreement_rates(judged),
                                                   "codes_per_image": sum(map(len, codes)) / len(codes)}
    t = figures["tokenizer"]
    figures["trilemma"] = {
        "lavit": {"tokens_per_image": t["kept_mean"], "feature_error_1_minus_cos": 1 - t["cosine_quantized"],
                  "pixel_l1": t["pixel_l1"], "discrete": True},
        "mlp (reference)": {"tokens_per_image": tok.n_patches, "feature_error_1_minus_cos": 0.0, "discrete": False},
    }
    figures["seconds"] = round(time.perf_counter() - t0, 1)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    show = list(range(min(cfg.grid, n)))
    best = max(cfg.cfg_scales, key=lambda s: figures[f"text_to_image_cfg{s:g}"]["full"])
    sheet = sample_grid([[real[i], recon[i]] + [generated[s][i] for s in cfg.cfg_scales] for i in show],
                        [prompts[i] for i in show],
                        ["real", "recon"] + [f"gen cfg {s:g}" for s in cfg.cfg_scales],
                        [verdicts[best][i] for i in show])
    sheet.save(out / "samples.png")
    (out / "metrics.json").write_text(json.dumps({"config": asdict(cfg), **figures}, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(figures, cfg) + "\n")
    return figures


def summary_markdown(f: dict, cfg: MeasureConfig) -> str:
    t = f["tokenizer"]
    lines = [f"LaVIT figures on the {f['split']} split ({t['images']} images, {t['patches']} patches each)", "",
             f"- tokens kept per image: mean {t['kept_mean']:.1f} (share {t['kept_share']:.2f}), sd {t['kept_std']:.1f}, "
             f"range {t['kept_min']}-{t['kept_max']}; Pearson r with object count {t['kept_vs_objects_pearson']:.2f}; "
             "by count " + ", ".join(f"{k}: {v:.1f}" for k, v in t["kept_by_object_count"].items()),
             f"- kept share: object patches {t['kept_share_object_patches']:.2f}, background patches "
             f"{t['kept_share_background_patches']:.2f}",
             f"- feature cosine: continuous {t['cosine_continuous']:.3f}, quantized {t['cosine_quantized']:.3f} "
             f"(object patches {t['cosine_quantized_object_patches']:.3f}); "
             f"pixel L1 {t['pixel_l1']:.4f}, PSNR {t['pixel_psnr_db']:.1f} dB",
             f"  (baselines: mean-feature cosine {t['cosine_baseline_mean_features']:.3f}, flat-background pixel L1 "
             f"{t['pixel_l1_baseline_background']:.4f})",
             f"- codebook: perplexity {t['codebook']['perplexity']:.1f} of {t['codebook']['size']}, "
             f"used {t['codebook']['used']}, EMA-dead {t['codebook']['dead_ema']}", "",
             "| images judged by the checker | colours present | colours exact | objects present | objects exact | "
             "sizes | relation | full | n |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [("real renders", f["checker_real_renders"]), ("tokenizer reconstructions", f["checker_tokenizer_reconstructions"])]
    rows += [(f"generated, CFG {s:g}", f[f"text_to_image_cfg{s:g}"]) for s in cfg.cfg_scales]
    rows += [("baseline: real renders of other scenes", f["checker_other_scenes"]),
             ("baseline: generated with no caption", f["unconditional_cfg1"])]
    for name, a in rows:
        lines.append(f"| {name} | {a['colors_present']:.1%} | {a['colors_exact']:.1%} | {a['objects_present']:.1%} | {a['objects_exact']:.1%} | {a['sizes_ok']:.1%} | "
                     f"{a['relation_ok']:.1%} | {a['full']:.1%} | {a['n']} |")
    return "\n".join(lines)
