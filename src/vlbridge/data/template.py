"""Chat templates and sequence building from token spans.

A conversation is built segment by segment: each role marker and each message is tokenized on its own
and concatenated, so the labels come straight from the spans (assistant message + end marker supervised,
everything else -100) and never from re-tokenizing rendered strings. Every ``<image>`` in a user message
becomes ONE ``image_token_id`` at that exact place; the model later expands it in place to that image's
M visual tokens (M may differ per image).

An instruct LLM's own chat template (``tokenizer.apply_chat_template``) is used as the template named
``tokenizer``: ``hf_chat_template.py`` reads its role markers off rendered probe conversations into a
``ChatTemplate``, so it is built the same way, segment by segment.

Room for later special tokens: anything added with ``VLBridgeModel.add_tokens`` (region tokens ``<r0>``…,
``[IMG]``/``[/IMG]``, a discrete visual vocabulary) is an added token of the tokenizer, so it is kept
whole when it appears in a message, and its labels follow the same span rule.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import unknown_name
from ..config import register_names

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"
# Roles of a document record (``data.records``): its text, and the answer that continues it. Both are
# supervised and written without role markers; a document ends with the assistant's end marker.
DOCUMENT, COMPLETION = "document", "completion"
MEMO_SIZE, MEMO_MAX_CHARS = 65536, 512      # SequenceBuilder.encode remembers up to 64k texts of <= 512 chars


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    system_prefix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str          # supervised: the model learns to end its turn
    add_bos: bool = True
    default_system: str | None = None   # None: no system turn unless the record has one ("" = an empty one)
    assistant_trailer: str = ""    # unsupervised text after an assistant turn's end (ChatML's newline)
    trim: bool = False             # messages are stripped of surrounding whitespace (Llama-3's templates)

    def special_tokens(self) -> list[str]:
        """Marker strings a tokenizer trained for this template must keep whole."""
        parts = [self.system_prefix, self.user_prefix, self.user_suffix, self.assistant_prefix, self.assistant_suffix]
        return sorted({p.strip() for p in parts if p.strip()})


TEMPLATES: dict[str, ChatTemplate] = {
    # The tiny default: one marker token per role, no newlines to learn.
    "plain": ChatTemplate("plain", "<|system|>", "<|user|>", "<|end|>", "<|assistant|>", "<|end|>"),
    # Qwen2 / ChatML (as Qwen2-Instruct's own template renders it, the newline after each turn included).
    "chatml": ChatTemplate("chatml", "<|im_start|>system\n", "<|im_start|>user\n", "<|im_end|>\n",
                           "<|im_start|>assistant\n", "<|im_end|>", add_bos=False,
                           default_system="You are a helpful assistant.", assistant_trailer="\n"),
    # Vicuna v1 (LLaVA-1.5): plain-text roles.
    "vicuna": ChatTemplate("vicuna", "", "USER: ", " ", "ASSISTANT: ", "</s>",
                           default_system="A chat between a curious human and an artificial intelligence assistant. "
                                          "The assistant gives helpful, detailed, and polite answers to the human's questions."),
}
TOKENIZER_TEMPLATE = "tokenizer"     # the LLM tokenizer's own chat template (hf_chat_template.py)
register_names("chat_templates", lambda: (*TEMPLATES, TOKENIZER_TEMPLATE))



def get_template(name: str, tokenizer=None) -> ChatTemplate:
    """The named template; ``tokenizer``: the one the tokenizer's own chat template describes (its markers read
    off ``apply_chat_template``)."""
    if name == TOKENIZER_TEMPLATE:
        if tokenizer is None:
            raise ValueError("the 'tokenizer' chat template needs the LLM's tokenizer")
        from .hf_chat_template import template_from_tokenizer
        return template_from_tokenizer(tokenizer)
    if name not in TEMPLATES:
        raise unknown_name("chat template", name, [*TEMPLATES, TOKENIZER_TEMPLATE])
    return TEMPLATES[name]


class SequenceBuilder:
    """Turns (role, text) turns into ``input_ids`` and ``labels`` lists for one sample."""

    def __init__(self, tokenizer, template: ChatTemplate):
        self.tok = tokenizer
        self.template = template
        # Role markers, instructions and common questions recur in every record: each distinct short text is
        # tokenized once.
        self._memo: dict[tuple[str, int], tuple[int, ...]] = {}
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {IMAGE_TOKEN!r} token; add it with VLBridgeModel.add_tokens")

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        if len(text) > MEMO_MAX_CHARS:
            return self.tok.encode(text, add_special_tokens=False)
        key = (text, len(self.tok))                  # the vocabulary size too: tokens may be added later
        if key not in self._memo:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = tuple(self.tok.encode(text, add_special_tokens=False))
        return list(self._memo[key])

    def encode_message(self, text: str) -> list[int]:
        """A message with each <image> replaced by one image_token_id, in place."""
        if self.template.trim:
            text = text.strip()
        ids: list[int] = []
        for i, piece in enumerate(text.split(IMAGE_TOKEN)):
            if i:
                ids.append(self.image_token_id)
            ids.extend(self.encode(piece))
        return ids

    def build(self, turns, for_generation: bool = False) -> tuple[list[int], list[int]]:
        """turns: sequence of objects with .role in {system,user,assistant} and .text.

        for_generation: drop a trailing assistant turn (if any) and end with the assistant prefix; a document
        drops its trailing completion (if any) and ends where its text ends.
        """
        if turns and turns[0].role == DOCUMENT:
            return self.build_document(turns, for_generation)
        t = self.template
        ids: list[int] = []
        labels: list[int] = []

        def add(span: list[int], supervised: bool) -> None:
            ids.extend(span)
            labels.extend(span if supervised else [IGNORE_INDEX] * len(span))

        if t.add_bos and self.tok.bos_token_id is not None:
            add([self.tok.bos_token_id], False)
        turns = list(turns)
        if for_generation and turns and turns[-1].role == "assistant":
            turns = turns[:-1]
        if t.default_system is not None and not (turns and turns[0].role == "system"):
            add(self.encode(t.system_prefix) + self.encode(t.default_system) + self.encode(t.user_suffix), False)
        for turn in turns:
            if turn.role == "system":
                add(self.encode(t.system_prefix) + self.encode_message(turn.text) + self.encode(t.user_suffix), False)
            elif turn.role == "user":
                add(self.encode(t.user_prefix) + self.encode_message(turn.text) + self.encode(t.user_suffix), False)
            elif turn.role == "assistant":
                add(self.encode(t.assistant_prefix), False)
                add(self.encode_message(turn.text) + self.encode(t.assistant_suffix), True)
                add(self.encode(t.assistant_trailer), False)
            else:
                raise ValueError(f"unknown role {turn.role!r}")
        if for_generation:
            add(self.encode(t.assistant_prefix), False)
        return ids, labels

    def build_document(self, turns, for_generation: bool = False) -> tuple[list[int], list[int]]:
        """A document (text, then its optional completion): bos, every token supervised, the assistant's end
        marker; for generation only the text, unsupervised, with no end marker."""
        ids = [self.tok.bos_token_id] if self.template.add_bos and self.tok.bos_token_id is not None else []
        labels = [IGNORE_INDEX] * len(ids)
        parts = [t for t in turns if not (for_generation and t.role == COMPLETION)]
        for turn in parts:
            if turn.role not in (DOCUMENT, COMPLETION):
                raise ValueError(f"a document holds only {DOCUMENT!r} and {COMPLETION!r} parts, not {turn.role!r}")
            span = self.encode_message(turn.text)
            ids += span
            labels += [IGNORE_INDEX] * len(span) if for_generation else span
        if not for_generation:
            end = self.encode(self.template.assistant_suffix)
            ids, labels = ids + end, labels + end
        return ids, labels

    def stop_token_ids(self) -> list[int]:
        """Tokens that end an assistant turn during generation."""
        stops = set()
        suffix = self.encode(self.template.assistant_suffix.strip())
        if suffix:
            stops.add(suffix[0])
        if self.tok.eos_token_id is not None:
            stops.add(self.tok.eos_token_id)
        return sorted(stops)
