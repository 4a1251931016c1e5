"""The connector registry: name -> class. A new connector is one new file plus one entry here.

``build_connector(cfg, vis_dim, llm_dim, grid)`` validates the options against the connector's typed
``Options`` dataclass, so a misspelt option is an error rather than silently ignored.
"""
from __future__ import annotations

import dataclasses

from ..config import register_names
from ..errors import UserError, did_you_mean, unknown_name
from .base import (Arranged, Connector, ConnectorOutput, ImageSlot, ObjectiveTerms, SequenceContext,
                   TrainingCollapse, VisualFeatures)
from .cabstractor import CAbstractorConnector
from .emu import EmuConnector
from .groma import GromaConnector
from .lavit import LavitConnector
from .linear import LinearConnector
from .lion import LionConnector
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
    "lion": LionConnector,
    "emu": EmuConnector,
}
register_names("connectors", lambda: tuple(CONNECTORS))
for _name, _cls in CONNECTORS.items():
    register_names(f"connector_options.{_name}", lambda cls=_cls: tuple(f.name for f in dataclasses.fields(cls.Options)))


def build_connector(name: str, options: dict, vis_dim: int, llm_dim: int, grid) -> Connector:
    """The connector `name` with `options`; a bad name or option is a UserError (the constructors validate
    their options with ValueErrors, which are reported as the user's to fix)."""
    if name not in CONNECTORS:
        raise unknown_name("connector", name, CONNECTORS)
    cls = CONNECTORS[name]
    known = [f.name for f in dataclasses.fields(cls.Options)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
        raise UserError(f"connector {name!r} has no option(s) {unknown}{hint}; options: {', '.join(known)}")
    try:
        return cls(cls.Options(**options), vis_dim, llm_dim, grid)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(str(e)) from e


__all__ = ["CONNECTORS", "Arranged", "Connector", "ConnectorOutput", "ImageSlot", "ObjectiveTerms", "SequenceContext",
           "TrainingCollapse", "VisualFeatures", "build_connector"]
