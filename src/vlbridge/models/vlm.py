"""VLBridgeModel: vision encoder -> connector -> LLM, with save_pretrained / from_pretrained.

A saved model is a directory with ``config.json`` (the resolved ModelConfig: full HF configs of the
vision encoder and the LLM, the connector name and options, LoRA settings), ``model.safetensors`` and the
tokenizer files. Loading rebuilds every module from config.json and loads the weights; nothing is
pickled and nothing is downloaded.

The model lives on one device (``device``, where its LLM's embeddings are); ``embed`` moves the batch it is
given there, so callers hand over CPU tensors and never place anything themselves.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file
from torch import nn

from .. import __version__
from ..config import ConnectorConfig, LLMConfig, ModelConfig, VisionConfig, from_dict
from ..connectors import ConnectorOutput, SequenceContext, build_connector
from ..data.template import IGNORE_INDEX, IMAGE_TOKEN, get_template
from ..errors import UserError
from .instruction_text import instruction_spans, instruction_text
from .llm import build_llm
from .loss_weights import answer_weights
from .precision import parameter_dtype
from .sparse_logits import head_is_separable, last_hidden, scored_logits
from .splice import Spliced, splice
from .tokenizer import load_tokenizer
from .vision import VisionTower

MODULES = ("vision", "connector", "llm")


@dataclass
class VLMOutput:
    loss: torch.Tensor              # mean LM loss over supervised tokens + auxiliary losses
    lm_loss_sum: torch.Tensor       # weighted sum of token cross-entropies (exact averaging over accumulation)
    weight_sum: float               # sum of the token weights (= n_tokens with token weighting)
    n_tokens: int                   # supervised tokens
    n_positions: int                # real (non-pad) positions processed by the LLM
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)   # weighted extra terms (connector, objective)
    logits: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)   # diagnostics of the hidden-state objective, for the log


class VLBridgeModel(nn.Module):
    def __init__(self, cfg: ModelConfig, tokenizer, vision: VisionTower | None = None, llm: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        self.template = get_template(cfg.llm.chat_template, tokenizer)     # 'tokenizer': the LLM's own
        self.vision = vision if vision is not None else VisionTower(cfg.vision)
        self.llm = llm if llm is not None else build_llm(cfg.llm, vocab_size=len(tokenizer))
        if self.llm.get_input_embeddings().num_embeddings < len(tokenizer):
            self._resize_embeddings()
        self.connector = build_connector(cfg.connector.name, cfg.connector.options, self.vision.out_dim,
                                         self.llm_dim, self.vision.grid)
        self.connector.bind_vision(self.vision)
        self.vision.request_layers(self.connector.encoder_layers())
        self.connector.wrap_llm(self.llm)                    # e.g. adapters beside the LLM's FFNs
        missing = [t for t in self.connector.added_tokens() if t not in tokenizer.get_vocab()]
        if missing:                                          # e.g. region ids, [IMG] / [/IMG], visual codes
            self.add_tokens(missing)
        self.builder = self.connector.sequence_builder(tokenizer, self.template)
        self.image_token_id = self.builder.image_token_id
        self.lora: dict | None = None

    # ---- construction -------------------------------------------------------------------------------
    @property
    def llm_dim(self) -> int:
        return self.llm.get_input_embeddings().embedding_dim

    @property
    def device(self) -> torch.device:
        """Where the model runs (its LLM's input embeddings); batches are moved here by ``embed``."""
        return self.llm.get_input_embeddings().weight.device

    def module_named(self, name: str) -> nn.Module:
        return {"vision": self.vision, "connector": self.connector, "llm": self.llm}[name]

    def add_tokens(self, tokens: list[str], special: bool = True) -> list[int]:
        """Add tokens (region ids, [IMG]/[/IMG], visual codes) to the tokenizer; new embeddings = mean."""
        if special:
            self.tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)},
                                              replace_extra_special_tokens=False)
        else:
            self.tokenizer.add_tokens(list(tokens))
        self._resize_embeddings()
        return self.tokenizer.convert_tokens_to_ids(list(tokens))

    @torch.no_grad()
    def _resize_embeddings(self) -> None:
        old = self.llm.get_input_embeddings().num_embeddings
        new = len(self.tokenizer)
        if new <= old:
            return
        self.llm.resize_token_embeddings(new, mean_resizing=False)
        for emb in {id(e): e for e in (self.llm.get_input_embeddings(), self.llm.get_output_embeddings()) if e is not None}.values():
            emb.weight[old:] = emb.weight[:old].mean(0, keepdim=True)

    def apply_lora(self, r: int, alpha: int, targets: list[str]) -> None:
        from peft import LoraConfig, get_peft_model
        self.llm = get_peft_model(self.llm, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                                       lora_dropout=0.0, bias="none"))
        self.lora = {"r": r, "alpha": alpha, "targets": list(targets)}

    def train(self, mode: bool = True) -> "VLBridgeModel":
        """Training mode, except for a module with nothing to train: a frozen encoder stays in eval mode, so its
        BatchNorm statistics are neither used per batch nor updated and dropout stays off (frozen = unchanged)."""
        super().train(mode)
        if mode:
            for name in MODULES:
                module = self.module_named(name)
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    # ---- forward --------------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor, text=None) -> ConnectorOutput:
        feats = self.visual_features(pixel_values)         # features [n_img, N, D_vis]
        feats.text = text                                  # instruction per image (connectors with wants_text)
        return self.connector(feats)                       # tokens   [n_img, M, D_llm]

    def image_instructions(self, input_ids):
        """The user text of the turn holding each image, embedded (for connectors with ``wants_text``)."""
        spans = instruction_spans(list(input_ids), self.image_token_id, self.template, self.builder.encode)
        return instruction_text(self.llm.get_input_embeddings(), spans)

    def embed(self, input_ids, labels, pixel_values, padding_side: str = "right") -> tuple[Spliced, dict]:
        """The LLM input of a batch: text embeddings with each image's visual tokens in place of its placeholder
        (after the connector's ``arrange``); ``Spliced.info`` carries what ``decode_answers`` needs."""
        input_ids, visual, aux, info = list(input_ids), [], {}, None
        if pixel_values is not None and len(pixel_values):
            text = self.image_instructions(input_ids) if self.connector.wants_text else None
            feats = self.visual_features(pixel_values)     # features [n_img, N, D_vis] (+ requested layers)
            feats.text = text
            out = self.connector(feats)                    # tokens [n_img, M, D_llm]
            arranged = self.connector.arrange(self.sequence_context(), input_ids, labels, feats, out, self._wrap_images(out.per_image()))
            input_ids, labels, visual, info = arranged.input_ids, arranged.labels, arranged.visual, arranged.info
            aux = out.aux_losses
        spliced = splice(self.llm.get_input_embeddings(), input_ids, labels, visual, self.image_token_id, padding_side,
                         self.cfg.llm.image_positions)
        spliced.info = info
        if visual:
            spliced.connector_output = out
            self._supervise_image_ends(spliced)
        return spliced, aux

    def visual_features(self, pixel_values: torch.Tensor):
        """The encoder's features of a pixel batch [n_img, 3, S, S] (any device), in the connector's dtype."""
        return self.vision(pixel_values.to(self.device)).to(parameter_dtype(self.connector))
    def _supervise_image_ends(self, s: Spliced) -> None:
        """A produced image (see ``ImageSlot``) ends with a supervised closing wrap token (e.g. [/IMG]): its last
        visual position learns to close the image by the next-token loss."""
        wrap = self.connector.wrap_tokens
        if s.labels is None or len(wrap) < 2:
            return
        close = self.tokenizer.convert_tokens_to_ids(wrap[-1])
        for slot in s.slots:
            if slot.produced:
                s.labels[slot.row, slot.start + slot.length - 1] = close

    def sequence_context(self) -> SequenceContext:
        return SequenceContext(self.tokenizer, self.llm.get_input_embeddings(), self.image_token_id,
                               self.cfg.llm.image_positions, self.training)

    def _wrap_images(self, visual: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each image's tokens between the embeddings of the connector's ``wrap_tokens`` (e.g. [IMG] ... [/IMG])."""
        wrap = self.connector.wrap_tokens
        if not wrap:
            return visual
        ids = torch.tensor(self.tokenizer.convert_tokens_to_ids(list(wrap)), device=self.device)
        start, end = self.llm.get_input_embeddings()(ids)[:, None].unbind(0)   # each [1, D]
        return [torch.cat([start, v, end]) for v in visual]

    def routing(self, tasks=None, types=None):
        """A context in which the LLM routes each sample by its task type (a mixture of adapters picks its
        adapters by it): ``tasks`` are the records' tasks (mapped by the connector), or ``types`` the type names
        themselves; neither = every sample takes the default type."""
        if types is None and tasks is not None:
            types = self.connector.task_types(list(tasks))
        return self.connector.routing(types)

    def forward(self, batch, return_logits: bool = False, loss_weighting: str = "token") -> VLMOutput:
        with self.routing(tasks=[r.task for r in batch.records] if batch.records else None):
            return self.lm_forward(batch, return_logits, loss_weighting)

    def lm_forward(self, batch, return_logits: bool = False, loss_weighting: str = "token") -> VLMOutput:
        """The loss of a batch under whatever task routing is in force (``forward`` sets it from the records)."""
        s, aux = self.embed(batch.input_ids, batch.labels, batch.pixel_values)
        # Right padding: under a causal mask no real position ever sees a pad, so the padding mask changes
        # nothing that is scored and can be dropped; attention then takes the mask-free causal kernel.
        # Not with shared image positions: without a mask, transformers reads every position id that does not
        # step by +1 as the start of a new packed sequence and would cut attention there.
        mask = None if self.cfg.llm.image_positions == "sequential" else s.attention_mask
        inputs = dict(inputs_embeds=s.inputs_embeds, attention_mask=mask, position_ids=s.position_ids, use_cache=False)
        targets = s.labels[:, 1:]                                                 # next-token targets [B, T-1]
        logits, hidden = None, None
        wants_hidden = self.connector.uses_hidden_states and any(slot.produced for slot in s.slots)
        if return_logits or not self.separable_head():
            result = self.llm(**inputs, output_hidden_states=wants_hidden)
            logits = result.logits                                                # [B, T, V]
            hidden = result.hidden_states[-1] if wants_hidden else None           # [B, T, D] (after the final norm)
            ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                                 reduction="none").view_as(targets)               # in fp32 whatever the precision
        else:                                       # the LM head only where a target is scored (sparse_logits.py)
            scored = F.pad(targets != IGNORE_INDEX, (0, 1))                       # [B, T]: position t predicts t+1
            hidden = last_hidden(self.llm, **inputs)                              # [B, T, D]
            ce = targets.new_zeros(targets.shape, dtype=torch.float32)
            ce[scored[:, :-1]] = F.cross_entropy(scored_logits(self.llm, scored, hidden).float(),
                                                 targets[scored[:, :-1]], reduction="none")
        stats = {}
        if wants_hidden:                            # an objective on the hidden states (Connector.hidden_objective)
            terms = self.connector.hidden_objective(hidden, s.slots, s.connector_output.per_image(),
                                                    self.sequence_context())
            aux, stats = {**aux, **terms.losses}, terms.stats
        weights = answer_weights(targets, loss_weighting)
        loss_sum, weight_sum = (ce * weights).sum(), float(weights.sum())
        loss = loss_sum / max(weight_sum, 1e-8) + sum(aux.values(), torch.zeros(()))
        return VLMOutput(loss, loss_sum, weight_sum, int((targets != IGNORE_INDEX).sum()),
                         int(s.attention_mask.sum()), aux, logits if return_logits else None, stats)

    def separable_head(self) -> bool:
        """Whether the LLM's logits are its output embedding of its decoder's states (checked once per model)."""
        key = id(self.llm)                          # re-checked if the LLM is replaced (e.g. wrapped by LoRA)
        if getattr(self, "_separable_head", (None, None))[0] != key:
            self._separable_head = (key, head_is_separable(self.llm))
        return self._separable_head[1]

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids; keeps added tokens (region ids, [IMG]...), drops only bos/eos/pad."""
        drop = {self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        return self.tokenizer.decode([t for t in ids if t not in drop]).strip()

    def decode_answers(self, outs: list[list[int]], info: list | None = None) -> list[str]:
        """Texts of a batch's generated ids, read back by the connector (``info``: ``Spliced.info`` of the prompts;
        e.g. a region-token model writes each ``<roi><rj></roi>`` as region j's box)."""
        infos = info if info is not None else [None] * len(outs)
        return [self.connector.decode_answer(self.decode(ids), i) for ids, i in zip(outs, infos)]

    def visual_tokens_per_image(self) -> int:
        """Visual tokens one image takes (the maximum, for dynamic connectors): used for length checks."""
        return self.connector.num_tokens() + len(self.connector.wrap_tokens)

    # ---- persistence ----------------------------------------------------------------------------------
    def resolved_config(self) -> ModelConfig:
        llm_cfg = self.llm.get_base_model().config if self.lora else self.llm.config
        return ModelConfig(
            vision=dataclasses.replace(self.cfg.vision, name_or_path=None, arch=self.vision.resolved_arch(),
                                       image_size=self.vision.image_size, image_mean=self.vision.image_mean,
                                       image_std=self.vision.image_std,
                                       preprocess="processor" if self.vision.processor_config else "resize",
                                       processor_config=self.vision.processor_config),
            connector=ConnectorConfig(self.cfg.connector.name, self.connector.options_dict()),
            llm=dataclasses.replace(self.cfg.llm, name_or_path=None, tokenizer=None, arch=llm_cfg.to_dict()),
        )

    def save_pretrained(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write config.json, model.safetensors and the tokenizer into `path` (atomically: temp dir + rename).
        ``state_dict``: the full weights to write when this process holds only a shard of them (FSDP)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        meta = {"model_type": "vlbridge", "vlbridge_version": __version__, "lora": self.lora,
                **dataclasses.asdict(self.resolved_config())}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        tensors, aliases = self.weights_for_saving(state_dict)
        save_file(tensors, str(tmp / "model.safetensors"), metadata=aliases)
        self.tokenizer.save_pretrained(str(tmp))
        replace_dir(tmp, path)

    def weights_for_saving(self, state_dict: dict[str, torch.Tensor] | None = None
                           ) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
        """The tensors to write (on the CPU, contiguous) and the names left out because they alias a written one
        (tied embeddings), as safetensors' ``save_model`` does: of each group of names for one parameter the
        alphabetically first is kept, the others are recorded in the metadata as ``{dropped: kept}``."""
        state = self.state_dict() if state_dict is None else state_dict
        groups: dict[int, list[str]] = {}
        for name, tensor in [*self.named_parameters(remove_duplicate=False), *self.named_buffers(remove_duplicate=False)]:
            groups.setdefault(id(tensor), []).append(name)
        aliases = {}
        for names in groups.values():
            saved = sorted(n for n in names if n in state)          # non-persistent buffers are not saved
            for name in saved[1:]:
                aliases[name] = saved[0]
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in aliases}
        return tensors, aliases or None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> "VLBridgeModel":
        """The saved model at ``path`` in eval mode, on ``device`` (default: the CPU), all of it in ``dtype`` when
        given (inference in bf16; training keeps fp32 weights and uses ``--train.precision``)."""
        path = Path(path)
        meta = read_model_meta(path)
        cfg = ModelConfig(vision=from_dict(VisionConfig, meta["vision"]),
                          connector=from_dict(ConnectorConfig, meta["connector"]),
                          llm=from_dict(LLMConfig, meta["llm"]))
        model = cls(cfg, load_tokenizer(str(path)))
        if meta.get("lora"):
            model.apply_lora(meta["lora"]["r"], meta["lora"]["alpha"], meta["lora"]["targets"])
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if missing or unexpected:
            raise UserError(f"{path}/model.safetensors does not match config.json: missing={missing[:5]} "
                             f"unexpected={unexpected[:5]}")
        if dtype is not None:
            model.to(dtype)
        return model.to(device if device is not None else "cpu").eval()


def read_model_meta(path: str | Path) -> dict:
    """A saved model's config.json; a path holding no saved model is an error that names the likely one."""
    cfg_file = Path(path) / "config.json"
    try:
        meta = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(meta, dict) or meta.get("model_type") != "vlbridge":
        raise not_a_model(Path(path))
    return meta


def not_a_model(path: Path) -> Exception:
    """The error for a path that holds no saved model, with the likely intended one (RUN/final, the latest
    checkpoint's model) when `path` is a training run."""
    if not path.exists():
        return FileNotFoundError(f"model dir {path} does not exist")
    if not path.is_dir():
        return UserError(f"{path} is a file, not a saved model dir (e.g. RUN/final)")
    if (path / "final" / "config.json").is_file():
        return UserError(f"{path} is a training run, not a saved model: did you mean {path / 'final'}?")
    pointer = path / "checkpoints" / "latest"
    if pointer.is_file():
        latest = path / "checkpoints" / json.loads(pointer.read_text())["checkpoint"] / "model"
        return UserError(f"{path} is a training run that has not finished (no final/): its latest checkpoint's "
                         f"model is {latest}")
    if (path / "config.json").is_file():
        return UserError(f"{path / 'config.json'} is not a saved vlbridge model's config (no model_type "
                         f"'vlbridge'); pass the model dir a run writes, e.g. RUN/final")
    return FileNotFoundError(f"{path} is not a vlbridge model directory (no config.json)")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written temp dir into place; the previous `final` survives until the swap succeeds."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
