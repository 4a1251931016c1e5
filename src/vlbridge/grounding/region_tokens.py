"""Region tokens in text: ``<roi>``, ``</roi>`` and the index tokens ``<r0> … <rK>`` (Groma's interface).

Data stays in the text-coordinate form (LION's ``[x1,y1,x2,y2]``), so both grounding approaches train and
evaluate on the same records. A region-token model tokenizes every bracketed box of a message as
``<roi>`` + the box text + ``</roi>`` (``RegionSequenceBuilder``); once its proposer has seen the image, each
such span becomes ``<roi><rj></roi>`` (``rewrite``), where ``<rj>`` is the index of a region in the list the
prompt gives the LLM:

- a box in a user turn (REG, "what is at [box]?") is the user's own region: appended to the proposals, and
  its region feature is spliced in right after its ``</roi>`` (Groma's ``<refer_feat>``);
- a box in an answer (REC, grounded captions) points at the kept region that overlaps it most (training
  adds the ground-truth boxes to the candidates, so one always matches), and the model learns to emit
  ``<roi><rj></roi>``; the box is recovered as region j (``boxes_to_text``).

A span that already holds an index token (e.g. an earlier generated answer in a chat) is left as it is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..data.boxes import Box, find_boxes, format_box, parse_box
from ..data.template import IGNORE_INDEX, IMAGE_TOKEN, SequenceBuilder

ROI_START, ROI_END = "<roi>", "</roi>"
_GENERATED = re.compile(r"<roi>\s*((?:<r\d+>\s*)+)</roi>")
_INDEX = re.compile(r"<r(\d+)>")


def region_token(j: int) -> str:
    return f"<r{j}>"


def region_vocabulary(n: int) -> list[str]:
    """Tokens a region-token model adds to its tokenizer: <roi>, </roi>, <r0> … <r{n-1}>."""
    return [ROI_START, ROI_END] + [region_token(j) for j in range(n)]


@dataclass(frozen=True)
class RegionTokenIds:
    roi: int
    roi_end: int
    regions: tuple[int, ...]          # id of <rj> at position j

    @classmethod
    def from_tokenizer(cls, tokenizer, n: int) -> "RegionTokenIds":
        ids = tokenizer.convert_tokens_to_ids(region_vocabulary(n))
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError("the tokenizer lacks the region tokens <roi>, </roi>, <r0>…; add them with add_tokens")
        return cls(ids[0], ids[1], tuple(ids[2:]))


class RegionSequenceBuilder(SequenceBuilder):
    """A SequenceBuilder that writes each bracketed box of a message as ``<roi>`` box-text ``</roi>``."""

    def __init__(self, tokenizer, template, token_ids: RegionTokenIds):
        super().__init__(tokenizer, template)
        self.region_ids = token_ids

    def encode_text(self, text: str) -> list[int]:
        ids: list[int] = []
        pos = 0
        for start, end, parsed in find_boxes(text):
            if not parsed.ok:
                continue                                    # unreadable: stays plain text
            ids += self.encode(text[pos:start])
            ids += [self.region_ids.roi] + self.encode(format_box(parsed.box)) + [self.region_ids.roi_end]
            pos = end
        return ids + self.encode(text[pos:])

    def encode_message(self, text: str) -> list[int]:
        ids: list[int] = []
        for i, piece in enumerate(text.split(IMAGE_TOKEN)):
            if i:
                ids.append(self.image_token_id)
            ids.extend(self.encode_text(piece))
        return ids


@dataclass
class RoiSpan:
    start: int                 # position of <roi>
    end: int                   # position after </roi>
    box: Box | None            # the box written inside, or None when the span holds an index token
    region: int | None         # j of an <rj> inside, when it holds one
    answer: bool               # supervised (an assistant turn): the model must produce it


def find_spans(ids: list[int], labels: list[int] | None, token_ids: RegionTokenIds, decode) -> list[RoiSpan]:
    """Every ``<roi> … </roi>`` span of one sample, in order; ``decode`` turns ids into text."""
    index_of = {t: j for j, t in enumerate(token_ids.regions)}
    spans, i = [], 0
    while i < len(ids):
        if ids[i] != token_ids.roi:
            i += 1
            continue
        try:
            end = ids.index(token_ids.roi_end, i + 1)
        except ValueError:
            break                                           # an unclosed <roi> (truncated text): left alone
        inside = ids[i + 1:end]
        answer = labels is not None and labels[i] != IGNORE_INDEX
        if len(inside) == 1 and inside[0] in index_of:
            spans.append(RoiSpan(i, end + 1, None, index_of[inside[0]], answer))
        else:
            parsed = parse_box(decode(inside))
            if parsed.ok:
                spans.append(RoiSpan(i, end + 1, parsed.box, None, answer))
        i = end + 1
    return spans


def rewrite(ids: list[int], labels: list[int] | None, spans: list[RoiSpan], assigned: list[int | None],
            token_ids: RegionTokenIds, feature_token: int | None) -> tuple[list[int], list[int] | None, list[tuple[int, int]]]:
    """Replace each box span by ``<roi><rj></roi>`` (j = assigned[k]); after a user box also insert
    ``feature_token`` (a placeholder the region feature replaces). Returns new ids, new labels, and
    (position in the new ids, region index) of every inserted feature placeholder."""
    new_ids: list[int] = []
    new_labels: list[int] | None = [] if labels is not None else None
    features: list[tuple[int, int]] = []
    pos = 0
    for span, j in zip(spans, assigned):
        if span.box is None or j is None:
            continue
        new_ids += ids[pos:span.start]
        if new_labels is not None:
            new_labels += labels[pos:span.start]
        piece = [token_ids.roi, token_ids.regions[j], token_ids.roi_end]
        new_ids += piece
        if new_labels is not None:
            new_labels += piece if span.answer else [IGNORE_INDEX] * 3
        if not span.answer and feature_token is not None:
            features.append((len(new_ids), j))
            new_ids.append(feature_token)
            if new_labels is not None:
                new_labels.append(IGNORE_INDEX)
        pos = span.end
    new_ids += ids[pos:]
    if new_labels is not None:
        new_labels += labels[pos:]
    return new_ids, new_labels, features


def boxes_to_text(text: str, boxes) -> str:
    """Generated ``<roi><rj>…</roi>`` -> the box text of region j (several indices -> several boxes);
    an index with no region stays as it is (and will not parse as a box)."""
    def replace(m: re.Match) -> str:
        idx = [int(j) for j in _INDEX.findall(m.group(1))]
        if any(j >= len(boxes) for j in idx):
            return m.group(0)
        return " ".join(format_box([float(v) for v in boxes[j]]) for j in idx)
    return _GENERATED.sub(replace, text)
