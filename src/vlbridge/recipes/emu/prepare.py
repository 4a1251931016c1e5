"""An initial model for a next stage: a saved Emu model with its objective's options changed.

The options that shape no module (``regression_weight``, ``regression_loss``, ``detach_targets``,
``collapse_ratio``, ``collapse_patience``) may differ between stages: e.g. a model trained to read documents
without the regression (weight 0) starts the ``generate`` stage with the regression on. The weights are copied
unchanged; config.json records the new options.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from ...models.vlm import VLBridgeModel
from .image_generation import check_emu


def prepare(model_dir: str | Path, out: str | Path, options: dict) -> Path:
    if not options:
        raise UserError("emu prepare: give the objective options to change, e.g. --options '{\"regression_weight\": 1}'")
    model = VLBridgeModel.from_pretrained(model_dir)
    check_emu(model)
    try:
        model.connector.set_objective(**options)
    except ValueError as e:
        raise UserError(str(e)) from None
    model.save_pretrained(out)
    return Path(out)
