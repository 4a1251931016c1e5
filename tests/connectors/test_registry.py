"""Every connector documents its options one way, and declares its hooks and stages on the base class."""
import dataclasses

import pytest

from vlbridge.cli.connectors_cmd import describe
from vlbridge.config import STAGES
from vlbridge.connectors import CONNECTORS, Connector


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_every_option_has_a_meaning_and_describe_shows_it(name):
    cls = CONNECTORS[name]
    text = describe(name)
    for f in dataclasses.fields(cls.Options):
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text (declare it with config.opt)"
        assert f"  {f.name} (" in text
    assert "stages:" in text


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_stages_cover_the_common_ones_and_a_pre_stage_is_declared(name):
    cls = CONNECTORS[name]
    stages = cls.stages(cls.Options())
    assert set(STAGES) <= set(stages)
    if cls.pre_stage is not None:
        assert cls.pre_stage in stages and stages[cls.pre_stage].runner != "lm"


def test_hooks_are_declared_on_the_base_class_not_probed():
    """Connectors override hooks that exist on Connector; a misspelt hook would silently never be called."""
    hooks = {n for n in vars(Connector) if not n.startswith("__")}
    for name, cls in CONNECTORS.items():
        own = {n for n in vars(cls) if not n.startswith("_")} - {"Options", "forward", "num_tokens"}
        helpers = {n for n in own if n not in hooks}
        for n in helpers:                       # a connector's own helpers are fine, as long as none shadows a
            assert not n.startswith(("added_", "encoder_", "decode_", "wrap_", "wants_"))   # hook-like name
