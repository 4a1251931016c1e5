"""The connector interface: visual features from the encoder -> visual tokens for the LLM.

A connector receives ``VisualFeatures`` (``features [B, N, D_vis]`` plus the patch grid, the separate
feature layers, any other encoder layers it asked for, the CLS token and, on request, the instruction text)
and returns a ``ConnectorOutput``: ``tokens [B, M, D_llm]`` with a per-image length (dynamic tokenizers and
region tokens give a different M per image), optional auxiliary losses (already weighted; the trainer adds
them to the LM loss) and free-form extras.

Everything else a connector can do is a hook declared on ``Connector`` below, each with a default that
does nothing special, so reading this class tells what any connector may change: the text it conditions
on, tokens around each image, tokens it adds to the vocabulary, encoder layers it reads, how it rewrites
a sample's sequence (region tokens), how it reads an answer back, an objective on the LLM's hidden states
besides the next-token loss (regressing the images a sequence produces), its stages and the stage that must
run before the LLM stages, parts it loads from a separately trained directory, modules it adds inside the LLM
(adapters) and how it routes each sample through them by its task.

Each connector declares a typed ``Options`` dataclass; its fields are what ``config.json`` stores, so
loading rebuilds the same module, and their ``help`` metadata is what ``vlbridge connectors --describe``
prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..config import STAGES, Stage
from ..errors import UserError
from ..data.template import SequenceBuilder


@dataclass
class VisualFeatures:
    features: torch.Tensor                 # [B, N, D_vis] patch features (feature layers concatenated on D)
    grid: tuple[int, int]                  # (rows, cols) of the patch grid; N == rows * cols unless CLS is kept
    layers: list[torch.Tensor] = field(default_factory=list)  # each [B, N, D_layer], in feature_layers order
    cls: torch.Tensor | None = None        # [B, P, D_vis] prefix (CLS/register) tokens, if the encoder has them
    text: Any = None                       # the instruction per image, for connectors with ``wants_text``
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)   # encoder layers the connector asked for
                                           # (``encoder_layers``), as the encoder gives them: tokens
                                           # [B, P + N, D_l] or conv maps [B, C_l, H_l, W_l]

    def to(self, dtype: torch.dtype) -> "VisualFeatures":
        """The same features with every tensor in ``dtype`` (an encoder stored in bf16 feeding an fp32 connector)."""
        if self.features.dtype == dtype:
            return self
        return dataclasses.replace(self, features=self.features.to(dtype), layers=[t.to(dtype) for t in self.layers],
                                   cls=None if self.cls is None else self.cls.to(dtype),
                                   hidden={i: h.to(dtype) for i, h in self.hidden.items()})

    def layer_map(self, index: int) -> torch.Tensor:
        """Hidden layer ``index`` as a map [B, C, H, W]: conv maps as they are, tokens (without their CLS/prefix)
        put on the patch grid."""
        h = self._hidden(index)
        if h.dim() == 4:
            return h
        rows, cols = self.grid
        patches = h[:, h.shape[1] - rows * cols:]                              # [B, N, D]
        return patches.transpose(1, 2).reshape(h.shape[0], h.shape[2], rows, cols)

    def layer_tokens(self, index: int) -> torch.Tensor:
        """Hidden layer ``index`` as patch tokens [B, H*W, C] (no CLS/prefix; conv maps flattened row-major)."""
        h = self._hidden(index)
        if h.dim() == 4:
            return h.flatten(2).transpose(1, 2)
        return h[:, h.shape[1] - self.grid[0] * self.grid[1]:]

    def _hidden(self, index: int) -> torch.Tensor:
        if index not in self.hidden:
            raise KeyError(f"encoder layer {index} was not computed; a connector lists the layers it reads in "
                           f"encoder_layers() (computed: {sorted(self.hidden)})")
        return self.hidden[index]


@dataclass
class ConnectorOutput:
    tokens: torch.Tensor                   # [B, M_max, D_llm]
    lengths: torch.Tensor | None = None    # [B] valid tokens per image; None = all M_max are valid
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def per_image(self) -> list[torch.Tensor]:
        """The visual tokens of each image, each [M_i, D_llm]."""
        if self.lengths is None:
            return list(self.tokens.unbind(0))
        return [t[: int(n)] for t, n in zip(self.tokens, self.lengths)]


@dataclass
class ImageSlot:
    """Where one image's entries sit in a spliced batch (``models.splice``): row, first position (its first wrap
    token, if any) and number of entries (wrap tokens included). ``produced``: the image is part of what the
    sequence supervises (an image of a document, or in an assistant turn), not only context to read."""
    row: int
    start: int
    length: int
    produced: bool = False


@dataclass
class ObjectiveTerms:
    """What ``Connector.hidden_objective`` returns: loss terms (already weighted; added to the LM loss like
    ``aux_losses``) and diagnostics the trainer logs (plain floats)."""
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


class TrainingCollapse(UserError):
    """A training signal has degenerated (e.g. regression targets collapsed to a constant): the run stops, with a
    message saying which options avoid it."""


@dataclass
class SequenceContext:
    """What a connector that rewrites sequences (``arrange``) may use of the model."""
    tokenizer: Any
    embed: Callable[[torch.Tensor], torch.Tensor]      # token ids [...] -> LLM input embeddings [..., D]
    image_token_id: int
    image_positions: str                               # the LLM's visual position-id mode
    training: bool


@dataclass
class Arranged:
    """A batch's sequences after ``arrange``: per sample ids [L_b] and labels [L_b] (or None), the visual
    entries that replace each ``image_token_id`` in sample then position order, and per-sample information
    that ``decode_answer`` reads (e.g. the region list a prompt gave the LLM)."""
    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor] | None
    visual: list[torch.Tensor]
    info: list[Any] | None = None


class Connector(nn.Module):
    """Base class. Subclasses set ``Options`` and implement ``forward`` and ``num_tokens``; every other hook is
    optional."""

    Options: ClassVar[type] = None
    dynamic: ClassVar[bool] = False        # True when M varies per image (num_tokens is then an upper bound)
    # Text conditioning: True makes the model fill ``VisualFeatures.text`` with each image's instruction (the
    # user text of its turn, embedded by the LLM). May be set per instance from the options.
    wants_text: bool = False
    # Tokens placed around each image's visual tokens in the LLM sequence (e.g. ("[IMG]", "[/IMG]")); they must
    # be among ``added_tokens`` or the tokenizer's vocabulary.
    wrap_tokens: tuple[str, ...] = ()
    # True when ``hidden_objective`` reads the LLM's last hidden states (the model computes them only then).
    uses_hidden_states: bool = False
    # A stage of ``stages()`` that must run before the LLM stages (a region proposer, a visual tokenizer);
    # recipes and the arena run it first. None: the LLM stages can start from scratch.
    pre_stage: ClassVar[str | None] = None
    # The most images one sample may hold (None = any number); e.g. region tokens index one image's regions.
    images_per_sample: ClassVar[int | None] = None
    # True when answers may point at regions the connector lists (``decode_answer`` turns them into boxes).
    region_tokens: ClassVar[bool] = False

    def __init__(self, options, vis_dim: int, llm_dim: int, grid: tuple[int, int]):
        super().__init__()
        self.options = options
        self.vis_dim, self.llm_dim, self.grid = vis_dim, llm_dim, tuple(grid)

    # ---- required ---------------------------------------------------------------------------------------
    def forward(self, feats: VisualFeatures) -> ConnectorOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def num_tokens(self) -> int:
        """Visual tokens per image (the maximum, for dynamic connectors)."""
        raise NotImplementedError

    # ---- hooks --------------------------------------------------------------------------------------------
    def added_tokens(self) -> list[str]:
        """Tokens the model adds to the tokenizer for this connector (new embeddings start at the mean)."""
        return []

    def encoder_layers(self) -> list[int]:
        """Encoder hidden-state indices this connector reads besides the feature layers; the encoder computes
        them in the same pass and the feature cache keeps them (``VisualFeatures.hidden``)."""
        return []

    def bind_vision(self, tower) -> None:
        """Called once the model's vision tower exists, before any weights are loaded: a connector whose shapes
        depend on the encoder (the widths of the layers it reads) rebuilds its modules here."""

    def sequence_builder(self, tokenizer, template):
        """How conversation text becomes token ids and labels (``data.template.SequenceBuilder`` by default)."""
        return SequenceBuilder(tokenizer, template)

    def arrange(self, ctx: SequenceContext, input_ids: list[torch.Tensor], labels: list[torch.Tensor] | None,
                feats: VisualFeatures, out: ConnectorOutput, visual: list[torch.Tensor]) -> Arranged:
        """Rewrite a batch's sequences around its images before they are spliced into the LLM input.

        ``visual`` holds each image's tokens (``out`` per image, wrapped in ``wrap_tokens``). The default keeps
        ids, labels and visual entries as they are; a region-token connector lists regions after the image and
        turns boxes in the text into region references."""
        return Arranged(list(input_ids), labels, visual)

    def hidden_objective(self, hidden: torch.Tensor, slots: list[ImageSlot], visual: list[torch.Tensor],
                         ctx: SequenceContext) -> ObjectiveTerms:
        """Loss terms on the LLM's last hidden states ``hidden`` [B, T, D] besides the next-token loss (called
        only with ``uses_hidden_states``). ``slots`` say where each image sits and whether the sequence produces
        it; ``visual`` holds each image's tokens [M_i, D] as the connector made them (before wrapping). E.g. an
        image-regression objective scores the states before each produced image's tokens against those tokens.
        Raise ``TrainingCollapse`` to stop a run whose objective has degenerated. Default: no extra objective."""
        return ObjectiveTerms()

    def decode_answer(self, text: str, info: Any) -> str:
        """An answer's text from generated ids' text; ``info`` is this sample's ``Arranged.info`` entry."""
        return text

    @classmethod
    def stages(cls, options) -> dict[str, Stage]:
        """The stages a model with this connector can train: the common ``align`` and ``instruct``, adjusted (which
        connector parts stay frozen) or extended by the connector (e.g. a proposer's ``det`` stage)."""
        return dict(STAGES)

    def checkpoint_blocks(self) -> list[nn.Module]:
        """The repeated blocks whose activations ``--train.activation_checkpointing connector`` recomputes in the
        backward pass instead of keeping (e.g. a Q-Former's layers); [] = nothing worth recomputing."""
        return []

    def load_parts(self) -> None:
        """Load separately trained parts named in the options (e.g. a visual tokenizer dir) into a freshly built
        connector. Called when a model is built from its config, never when a saved model is loaded (its
        weights already hold those parts)."""

    def wrap_llm(self, llm: nn.Module) -> None:
        """Add modules inside the LLM by wrapping its submodules (e.g. adapters beside every FFN sublayer). Called
        once when the model is built, before LoRA and before any weights are loaded, so a saved model rebuilds
        them from the options; their parameters are the LLM's (``llm.…`` names)."""

    def task_types(self, tasks: Sequence[str | None]) -> list[str] | None:
        """The routing type of each sample from its record's ``task`` (None: the model does not route by task)."""
        return None

    def routing(self, types: Sequence[str] | None):
        """A context in which every LLM call routes sample i by ``types[i]`` (a type ``task_types`` gives);
        ``None`` = the default type for every sample. Default: nothing to route."""
        return contextlib.nullcontext()

    # ---- reporting ----------------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self, batch: int = 1) -> int:
        """Approximate forward FLOPs: 2 x multiply-accumulates of every Linear on its input tokens."""
        n_in = self.grid[0] * self.grid[1]
        return batch * sum(2 * m.in_features * m.out_features * n_in for m in self.modules() if isinstance(m, nn.Linear))

    def options_dict(self) -> dict:
        return dataclasses.asdict(self.options)
