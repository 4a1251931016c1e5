"""Captioning metrics over a whole split: CIDEr-D, BLEU-4 and ROUGE-L from pycocoevalcap.

pycocoevalcap's ``Cider`` is the CIDEr-D variant reported on COCO (n-grams 1-4, clipped counts, Gaussian
length penalty with sigma 6, x10). Its IDF is the document frequency of each n-gram over the references of
*every* item scored in one call, so all items of a split must be scored together: never average per-batch
CIDEr (``caption_scores`` takes the whole split). Texts are tokenized first (``caption_tokenizer``:
Java PTB when available, else the documented Python stand-in). BLEU-4 is pycocoevalcap's corpus BLEU
("closest" reference length); ROUGE-L is its per-item F-score (beta 1.2) averaged. Only these pure-Python
scorers are imported: METEOR and SPICE (Java, model downloads) are never touched.

Values are on pycocoevalcap's scale (CIDEr-D of an exact match is up to 10, BLEU/ROUGE in [0, 1]); papers
usually print them x100.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from .caption_tokenizer import tokenize_captions


@dataclass
class CaptionScores:
    cider: float
    bleu4: float
    rouge_l: float
    tokenizer: str
    per_item_cider: list[float] = field(default_factory=list)
    per_item_bleu4: list[float] = field(default_factory=list)
    per_item_rouge_l: list[float] = field(default_factory=list)


def score_tokenized(references: dict[str, list[str]], predictions: dict[str, list[str]], tokenizer: str = "given") -> CaptionScores:
    """Score already tokenized text: {key: [reference, ...]} and {key: [prediction]}, same keys."""
    if not references:
        return CaptionScores(0.0, 0.0, 0.0, tokenizer)
    cider, cider_items = Cider().compute_score(references, predictions)
    bleu, bleu_items = Bleu(4).compute_score(references, predictions, verbose=0)
    rouge, rouge_items = Rouge().compute_score(references, predictions)
    return CaptionScores(float(cider), float(bleu[3]), float(rouge), tokenizer,
                         [float(v) for v in cider_items], [float(v) for v in bleu_items[3]],
                         [float(v) for v in rouge_items])


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = "auto") -> CaptionScores:
    """All items of a split at once: predictions[i] is scored against references[i] (one or more texts)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    for i, refs in enumerate(references):
        if not refs:
            raise ValueError(f"item #{i} has no reference caption")
    texts = {f"r{i}": list(refs) for i, refs in enumerate(references)}
    texts.update({f"p{i}": [pred] for i, pred in enumerate(predictions)})
    tokens, backend = tokenize_captions(texts, tokenizer)          # one tokenizer call for the split
    refs_tok = {str(i): tokens[f"r{i}"] for i in range(len(references))}
    preds_tok = {str(i): tokens[f"p{i}"] for i in range(len(predictions))}
    return score_tokenized(refs_tok, preds_tok, backend)
