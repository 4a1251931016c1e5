"""How a VLBridgeModel with a region-proposing connector (``groma``) builds its LLM input and reads answers.

``attach_regions(model)`` (called when the model is built) reads the encoder's layer widths, adds the
region tokens to the tokenizer (``add_tokens``: new embeddings = mean embedding) and gives the model a
``RegionSequenceBuilder``. Then, per batch, ``RegionWiring.embed`` replaces the model's own embedding step:

1. one encoder pass gives the connector's image tokens and every hidden state;
2. the frozen proposer proposes boxes per image; each sample's region list is built from them plus its
   user boxes (and, in training, its answer boxes) — ``region_list``;
3. box spans in the text become ``<roi><rj></roi>`` (+ a feature slot after user boxes) — ``region_tokens``;
4. the region encoder gives one token per listed box; each image placeholder expands to
   ``[image tokens] <r0> f0 <r1> f1 …`` and each feature slot to its region's token, through ``splice``.

``decode_answers`` recomputes the same region list (deterministic at inference) and writes each generated
``<roi><rj></roi>`` as region j's box text, so every metric and parser reads boxes one way.
One image per sample (the region indices are per image).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.boxes import Box
from ..models.splice import Spliced, splice
from .feature_maps import encode_with_hidden_states
from .region_list import RegionList, build_region_list
from .region_tokens import RegionSequenceBuilder, RegionTokenIds, boxes_to_text, find_spans, rewrite


@dataclass
class SamplePlan:
    ids: list[int]                     # rewritten ids (box spans -> region references)
    labels: list[int] | None
    image: int | None                  # index into pixel_values, None for a text-only sample
    regions: RegionList | None
    features: list[tuple[int, int]] = field(default_factory=list)   # (position, region) of feature slots


class RegionWiring:
    def __init__(self, model):
        conn = model.connector
        conn.bind_vision(model.vision)
        wanted = conn.added_tokens()
        missing = [t for t in wanted if t not in model.tokenizer.get_vocab()]
        if missing:
            model.add_tokens(missing)
        self.token_ids = RegionTokenIds.from_tokenizer(model.tokenizer, conn.num_region_tokens())
        model.builder = RegionSequenceBuilder(model.tokenizer, model.template, self.token_ids)

    # ---- planning -------------------------------------------------------------------------------------
    def plan(self, model, input_ids, labels, proposals, training: bool) -> list[SamplePlan]:
        o = model.connector.options
        plans, next_image = [], 0
        decode = model.tokenizer.decode
        for b, row in enumerate(input_ids):
            ids = row.tolist()
            lab = labels[b].tolist() if labels is not None else None
            n_images = ids.count(model.image_token_id)
            if n_images > 1:
                raise ValueError(f"sample {b} has {n_images} images; region tokens (groma) take one image per sample")
            if n_images == 0:
                plans.append(SamplePlan(ids, lab, None, None))
                continue
            spans = find_spans(ids, lab, self.token_ids, decode)
            answers: list[Box] = [s.box for s in spans if s.box is not None and s.answer]
            users: list[Box] = [s.box for s in spans if s.box is not None and not s.answer]
            boxes, scores = proposals[next_image]
            regions = build_region_list(boxes, scores, answers, users, o.max_regions, o.max_user_regions,
                                        training=training, gt_score=o.gt_score, nms_iou=o.nms_iou)
            it_answer, it_user = iter(regions.answer_index), iter(regions.user_index)
            assigned = [None if s.box is None else next(it_answer) if s.answer else next(it_user) for s in spans]
            feature_token = model.image_token_id if o.user_feature else None
            new_ids, new_labels, features = rewrite(ids, lab, spans, assigned, self.token_ids, feature_token)
            plans.append(SamplePlan(new_ids, new_labels, next_image, regions, features))
            next_image += 1
        return plans

    def _encode(self, model, pixel_values):
        feats, hidden = encode_with_hidden_states(model.vision, pixel_values)
        return feats, hidden, model.connector.propose(hidden, tuple(pixel_values.shape[-2:]))

    # ---- the LLM input -------------------------------------------------------------------------------
    def embed(self, model, input_ids, labels, pixel_values, padding_side: str = "right") -> tuple[Spliced, dict]:
        embed_tokens = model.llm.get_input_embeddings()
        if pixel_values is None or not len(pixel_values):
            return splice(embed_tokens, list(input_ids), labels, [], model.image_token_id, padding_side), {}
        conn = model.connector
        feats, hidden, proposals = self._encode(model, pixel_values)
        out = conn(feats)
        image_tokens = out.per_image()                                            # each [M, D]
        plans = self.plan(model, input_ids, labels, proposals, training=model.training)
        with_image = [p for p in plans if p.image is not None]
        region_feats = conn.encode_regions(hidden, tuple(pixel_values.shape[-2:]),
                                           [p.regions.boxes for p in with_image])  # [sum R, D]
        region_feats = region_feats.split([len(p.regions.boxes) for p in with_image])
        visual = []
        for plan, feats_b in zip(with_image, region_feats):
            index_embeds = embed_tokens(torch.tensor(self.token_ids.regions[:len(feats_b)], dtype=torch.long))
            if conn.options.tag_features:
                feats_b = feats_b + index_embeds
            listing = torch.stack([index_embeds, feats_b.to(index_embeds.dtype)], 1).flatten(0, 1)   # [2R, D]
            slots = {pos for pos, _ in plan.features}
            image_pos = next(i for i, t in enumerate(plan.ids) if t == model.image_token_id and i not in slots)
            entries = [(image_pos, torch.cat([image_tokens[plan.image], listing]))]
            entries += [(pos, feats_b[j][None]) for pos, j in plan.features]
            visual += [t for _, t in sorted(entries, key=lambda e: e[0])]
        ids = [torch.tensor(p.ids, dtype=torch.long) for p in plans]
        labs = [torch.tensor(p.labels, dtype=torch.long) for p in plans] if labels is not None else None
        return splice(embed_tokens, ids, labs, visual, model.image_token_id, padding_side), out.aux_losses

    # ---- reading answers ----------------------------------------------------------------------------
    @torch.no_grad()
    def region_boxes(self, model, input_ids, pixel_values) -> list[torch.Tensor | None]:
        """The region list of each prompt at inference (None for text-only prompts)."""
        if pixel_values is None or not len(pixel_values):
            return [None] * len(input_ids)
        _, _, proposals = self._encode(model, pixel_values)
        plans = self.plan(model, input_ids, None, proposals, training=False)
        return [p.regions.boxes if p.regions is not None else None for p in plans]

    def decode_answers(self, model, input_ids, pixel_values, outs: list[list[int]]) -> list[str]:
        texts = [model.decode(o) for o in outs]
        boxes = self.region_boxes(model, input_ids, pixel_values)
        return [t if b is None else boxes_to_text(t, b.tolist()) for t, b in zip(texts, boxes)]


def attach_regions(model) -> RegionWiring | None:
    """The region wiring for a model whose connector proposes regions; None for every other connector."""
    if not getattr(model.connector, "proposes_regions", False):
        return None
    return RegionWiring(model)
