"""The connector registry: name -> class. A new connector is one new file plus one entry here.

``build_connector(cfg, vis_dim, llm_dim, grid)`` validates the options against the connector's typed
``Options`` dataclass, so a misspelt option is an error rather than silently ignored.
"""
from __future__ import annotations

import dataclasses

from .base import (Arranged, Connector, ConnectorOutput, ImageSlot, ObjectiveTerms, SequenceContext,
                   TrainingCollapse, VisualFeatures)
from .cabstractor import CAbstractorConnector
from .emu import EmuConnector
from .groma import GromaConnector
from .lavit import LavitConnector
from .linear import LinearConnector
from .mlp import MLPConnector
from .pargo import ParGoConnector
from .pixel_shuffle import PixelShuffleConnector
from .qformer import QFormerConnector
from .resampler import ResamplerConnector

CONNECTORS: dict[str, type[Connector]] = {
    "linear": LinearConnector,
    "mlp": MLPConnector,
    "pargo": ParGoConnector,
    "qformer": QFormerConnector,
    "resampler": ResamplerConnector,
    "cabstractor": CAbstractorConnector,
    "pixel_shuffle": PixelShuffleConnector,
    "lavit": LavitConnector,
    "groma": GromaConnector,
    "emu": EmuConnector,
}


def build_connector(name: str, options: dict, vis_dim: int, llm_dim: int, grid) -> Connector:
    if name not in CONNECTORS:
        raise ValueError(f"unknown connector {name!r}; registered: {', '.join(sorted(CONNECTORS))}")
    cls = CONNECTORS[name]
    known = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"connector {name!r} has no option(s) {sorted(unknown)}; options: {sorted(known)}")
    return cls(cls.Options(**options), vis_dim, llm_dim, grid)


__all__ = ["CONNECTORS", "Arranged", "Connector", "ConnectorOutput", "ImageSlot", "ObjectiveTerms", "SequenceContext",
           "TrainingCollapse", "VisualFeatures", "build_connector"]
