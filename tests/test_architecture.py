"""The layering rule holds (no import runs from a lower layer to a higher one) and docs/architecture.md is current."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def arch():
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "tools" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["architecture"] = module
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_from_a_higher_layer(arch):
    problems = arch.check()
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("name, source, upward", [
    ("vlbridge.data.records", "from ..cli.main import main", True),                  # data -> CLI
    ("vlbridge.connectors.groma", "from ..recipes.groma import det_stage", True),      # model part -> pipeline
    ("vlbridge.train.trainer", "import vlbridge.arena.runner", True),                  # absolute form
    ("vlbridge.models.vlm", "from .. import recipes", True),                           # `from .. import pkg`
    ("vlbridge.recipes.stages", "from ..train.trainer import train", False),           # pipeline -> train: fine
    ("vlbridge.cli.main", "from ..arena import runner\nfrom .. import __version__", False),
])
def test_the_check_catches_an_upward_import(arch, name, source, upward):
    assert bool(arch.check_source(name, source, "probe.py")) == upward


def test_every_package_is_in_a_layer(arch):
    for entry in (ROOT / "src" / "vlbridge").iterdir():
        if entry.name.startswith("_") and entry.name not in ("__init__.py", "__main__.py") or entry.suffix == ".pyc":
            continue
        if entry.is_dir() and not (entry / "__init__.py").is_file():
            continue
        arch.layer_of(f"vlbridge.{entry.stem}")                  # KeyError names a package with no layer


def test_architecture_doc_is_current(arch):
    assert (ROOT / "docs" / "architecture.md").read_text() == arch.render(), \
        "docs/architecture.md is stale: run `python tools/architecture.py`"
