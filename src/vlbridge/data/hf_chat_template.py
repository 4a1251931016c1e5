"""An instruct LLM's own chat template, read into role markers so that labels still come from token spans.

``tokenizer.apply_chat_template`` renders whole conversations; training needs to know which tokens are the
assistant's. So the template is rendered on probe conversations whose messages are sentinels, and the text
between the sentinels gives the markers: BOS, the system block (with its default content, e.g. Qwen2's "You are
a helpful assistant." or Llama-3.2's knowledge-cutoff and date lines), the user and assistant prefixes and
suffixes, and what follows an assistant turn (split into the supervised end-of-turn token and an unsupervised
trailer such as ChatML's newline). Whether the template strips messages (Llama-3's ``| trim``) is probed too.

The result is checked before it is used: conversations built segment by segment from these markers must give
exactly the token ids ``apply_chat_template(..., tokenize=True)`` gives (with and without a system turn, and the
generation prompt). A template that cannot be split this way (different markers for the last turn, reasoning
blocks inserted into assistant turns ...) is refused with a UserError naming a built-in template to use instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .template import ChatTemplate, SequenceBuilder

U1, A1, U2, A2, S1 = "VLBRIDGEUSERONE", "VLBRIDGEANSWERONE", "VLBRIDGEUSERTWO", "VLBRIDGEANSWERTWO", "VLBRIDGESYSTEM"


@dataclass
class _Turn:                       # what SequenceBuilder.build reads
    role: str
    text: str


def _render(tok, messages: list[dict], generation: bool = False) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _ids(tok, messages: list[dict], generation: bool = False) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation)
    if isinstance(out, dict) or hasattr(out, "keys"):           # transformers >= 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out[0] if out and isinstance(out[0], list) else out)


def _between(text: str, *sentinels: str) -> list[str]:
    """The pieces of ``text`` before, between and after the sentinels (which must appear in order)."""
    pieces, start = [], 0
    for s in sentinels:
        at = text.find(s, start)
        if at < 0:
            raise ValueError(f"the chat template did not render the message {s!r} where expected")
        pieces.append(text[start:at])
        start = at + len(s)
    return pieces + [text[start:]]


def _split_end(tail: str, specials: list[str]) -> tuple[str, str]:
    """An assistant turn's ending = the supervised part up to and including its first special token (the end of
    turn the model must learn to write) + an unsupervised trailer."""
    hits = [(tail.find(s), s) for s in specials if s and tail.find(s) >= 0]
    if not hits:
        return tail, ""
    at, token = min(hits, key=lambda h: (h[0], -len(h[1])))
    return tail[:at + len(token)], tail[at + len(token):]


def read_markers(tok) -> ChatTemplate:
    """The role markers of ``tok``'s chat template (not yet checked against it; see ``template_from_tokenizer``)."""
    user = lambda text: {"role": "user", "content": text}
    assistant = lambda text: {"role": "assistant", "content": text}
    head, mid1, mid2, mid3, tail = _between(
        _render(tok, [user(U1), assistant(A1), user(U2), assistant(A2)]), U1, A1, U2, A2)
    if mid3 != mid1:
        raise ValueError("the second user turn is marked differently from the first")
    if not mid2.startswith(tail):
        raise ValueError("the last assistant turn ends differently from the others")
    user_prefix = mid2[len(tail):]
    if not head.endswith(user_prefix):
        raise ValueError("the first user turn is marked differently from the later ones")
    system_block = head[:len(head) - len(user_prefix)]
    bos = tok.bos_token or ""
    add_bos = bool(bos) and system_block.startswith(bos)
    if add_bos:
        system_block = system_block[len(bos):]
    try:
        sys_head, between, _, _ = _between(_render(tok, [{"role": "system", "content": S1}, user(U1), assistant(A1)]),
                                           S1, U1, A1)
    except Exception as e:                   # templates that refuse a system turn raise from jinja
        raise ValueError(f"it does not render a system turn ({e})") from None
    system_prefix = sys_head[len(bos):] if add_bos and sys_head.startswith(bos) else sys_head
    if not between.endswith(user_prefix):
        raise ValueError("the user turn after a system turn is marked differently")
    system_suffix = between[:len(between) - len(user_prefix)]
    user_suffix = system_suffix if mid1.startswith(system_suffix) else ""
    assistant_prefix = mid1[len(user_suffix):]
    if system_suffix != user_suffix:
        raise ValueError("system and user turns end differently")
    default_system = None
    if system_block:
        if not (system_block.startswith(system_prefix) and system_block.endswith(system_suffix)):
            raise ValueError("the default system turn is marked differently from a given one")
        default_system = system_block[len(system_prefix):len(system_block) - len(system_suffix)]
    generation = _between(_render(tok, [user(U1)], generation=True), U1)[1]
    if generation != mid1:
        raise ValueError("its generation prompt differs from how assistant turns start in training")
    trim = f" {U1} " not in _render(tok, [user(f" {U1} "), assistant(A1)])
    specials = sorted({*tok.all_special_tokens, *(t.content for t in tok.added_tokens_decoder.values() if t.special)})
    suffix, trailer = _split_end(tail, specials)
    return ChatTemplate("tokenizer", system_prefix, user_prefix, user_suffix,
                        assistant_prefix, suffix, add_bos=add_bos, default_system=default_system,
                        assistant_trailer=trailer, trim=trim)


PROBES = [
    [("user", "What is in the image?"), ("assistant", "A red circle."), ("user", "And its size?"),
     ("assistant", "Small, near the top.")],
    [("system", "Answer briefly."), ("user", "Count the squares."), ("assistant", "3")],
]


def check_against_tokenizer(tok, template: ChatTemplate) -> None:
    """Raise ValueError unless building from ``template`` gives the ids ``apply_chat_template`` gives."""
    builder = SequenceBuilder(tok, template)
    for turns in PROBES:
        messages = [{"role": r, "content": t} for r, t in turns]
        cases = [(turns, messages, False), (turns[:-1], messages[:-1], True)]
        for ours_turns, theirs, generation in cases:
            ours, _ = builder.build([_Turn(r, t) for r, t in ours_turns], for_generation=generation)
            theirs_ids = _ids(tok, theirs, generation)
            if ours != theirs_ids:
                at = next((i for i, (a, b) in enumerate(zip(ours, theirs_ids)) if a != b), min(len(ours), len(theirs_ids)))
                raise ValueError(f"built from its markers, {'a generation prompt' if generation else 'a conversation'} "
                                 f"differs from apply_chat_template at token {at}: ours "
                                 f"{tok.decode(ours[at:at + 8])!r} vs {tok.decode(theirs_ids[at:at + 8])!r}")


def template_from_tokenizer(tok) -> ChatTemplate:
    """The ChatTemplate of ``tok``'s own chat template, checked to reproduce ``apply_chat_template`` exactly."""
    where = tok.name_or_path or "the LLM's tokenizer"
    if not getattr(tok, "chat_template", None):
        raise UserError(f"llm.chat_template 'tokenizer': {where} has no chat template (a base model?); choose "
                        "plain, chatml or vicuna")
    try:
        template = read_markers(tok)
        check_against_tokenizer(tok, template)
    except ValueError as e:
        raise UserError(f"the chat template of {where} cannot be split into role markers: {e}; choose plain, chatml "
                        "or vicuna as llm.chat_template") from None
    return template
