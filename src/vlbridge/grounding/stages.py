"""What trains in each stage of a region-token (``groma``) model, on top of ``train.stages``.

- ``det``: the region proposer only (encoder frozen) — its own loop, ``grounding.det_stage``;
- ``align``: the connector (image MLP + region encoder) and the NEW token embeddings (``<roi>``, ``</roi>``,
  ``<r0>``…) — the LLM's other rows stay frozen: a gradient mask on the embedding matrix (and on the output
  matrix when untied) keeps every old row at exactly its value, and the matrix is excluded from weight decay;
- ``instruct``: the connector and the LLM (proposer frozen).
"""
from __future__ import annotations

import torch

from .region_tokens import region_vocabulary

_HOOKS = "_region_row_hooks"


def region_token_ids(model) -> list[int]:
    return model.tokenizer.convert_tokens_to_ids(region_vocabulary(model.connector.num_region_tokens()))


def _clear_row_masks(model) -> None:
    for handle, weight in model.__dict__.pop(_HOOKS, []):
        handle.remove()
        weight.no_weight_decay = False


def train_only_rows(model, rows: list[int]) -> None:
    """Make the LLM's embedding (and untied output) matrices trainable in ``rows`` only."""
    _clear_row_masks(model)
    handles = []
    embeddings = [model.llm.get_input_embeddings(), model.llm.get_output_embeddings()]
    for weight in {id(e.weight): e.weight for e in embeddings if e is not None}.values():
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype)
        mask[rows] = 1
        weight.requires_grad = True
        weight.no_weight_decay = True                     # read by train.stages.param_groups
        handles.append((weight.register_hook(lambda g, m=mask: g * m), weight))
    model.__dict__[_HOOKS] = handles


def apply_region_stage(model, stage: str) -> None:
    """Called by ``train.stages.apply_stage`` after the per-module freezing."""
    for p in model.connector.proposer.parameters():
        p.requires_grad = stage == "det"
    if stage == "det":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("connector.proposer.")
    _clear_row_masks(model)
    if stage == "align":
        train_only_rows(model, region_token_ids(model))
