"""Load and validate LLaVA-style instruction data and interleaved image-text documents.

A data file is a JSON list of records. A *chat* record::

    {"id": "000123",
     "image": "coco/000123.jpg",            # optional; or a list of paths ("images" is accepted too)
     "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the car?"},
                       {"from": "gpt", "value": "Red."}],
     "task": "color"}                        # optional

An image may sit in a user turn (the model reads it) or in an assistant turn (the model is to produce it;
connectors that regress images learn to). A *document* record has no roles: text with an ``<image>`` per
image, every text token supervised (an interleaved web page, a story of frames and captions)::

    {"id": "story_7", "images": ["f0.png", "f1.png"], "text": "<image> a red circle. <image> a red circle ..."}

A document may end with an ``"answer"``: text that continues it, supervised in training and the reference in
evaluation (the model sees ``text`` and is to write ``answer``, e.g. a few-shot episode's last answer).

Optional eval fields: ``"metric"`` (the metric family that scores the record, e.g. "vqa"; default: by
task) and ``"references"`` (a list of acceptable answers, e.g. VQA's 10 human answers; default: the
last assistant turn).

Image paths resolve against an image folder (default: the JSON file's directory)
and may not leave it. Every problem with a record becomes a :class:`DataError`
naming the file, the record id, its index and what is wrong; ``load_records``
either raises the first one or collects them all in a :class:`SkipReport`, so no
record is ever dropped silently.

Images are opened only up to their header while validating (size and mode); decoding and
mode conversion live in :mod:`vlbridge.data.images`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .images import MAX_IMAGE_PIXELS, ImageError, ImageModes, check_image_modes, describe_conversion, open_header
from .template import COMPLETION, DOCUMENT, IMAGE_TOKEN

from ..errors import UserError

__all__ = [
    "IMAGE_TOKEN",
    "ERROR_KINDS",
    "DataError",
    "Turn",
    "Record",
    "SkipReport",
    "load_records",
    "check_record",
]

log = logging.getLogger(__name__)

#: Categories used for ``DataError.kind``. The first three are file-level errors
#: (index -1); "too_long" is raised by the tokenising code, not by this module.
ERROR_KINDS = (
    "missing_file",
    "bad_json",
    "missing_folder",
    "missing_image",
    "unreadable_image",
    "image_mode",
    "image_too_large",
    "path_escape",
    "placeholders",
    "empty_conversation",
    "bad_roles",
    "bad_field",
    "too_long",
)

OnError = Literal["raise", "skip"]

_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


# --------------------------------------------------------------------------- errors


class DataError(UserError):
    """One bad record: ``str(e) == f"{file}: record {record_id!r} (#{index}): {problem}"``.

    File-level errors (the JSON file is missing or malformed) use ``index == -1``
    and ``record_id is None`` and read ``f"{file}: {problem}"``.
    """

    def __init__(self, file: Any, index: int, record_id: Any, problem: str, kind: str):
        # All fields go to Exception.args so the error survives pickling
        # (e.g. when raised inside a DataLoader worker).
        super().__init__(file, index, record_id, problem, kind)
        self.file = str(file)
        self.index = index
        self.record_id = record_id
        self.problem = problem
        self.kind = kind

    @classmethod
    def for_record(cls, record: Record, problem: str, kind: str) -> DataError:
        """Build an error about an already loaded record (e.g. kind "too_long")."""
        return cls(record.file, record.index, record.id, problem, kind)

    @property
    def where(self) -> str:
        if self.index < 0 and self.record_id is None:
            return self.file
        return f"{self.file}: record {self.record_id!r} (#{self.index})"

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "index": self.index,
            "id": self.record_id,
            "kind": self.kind,
            "problem": self.problem,
        }


# --------------------------------------------------------------------------- data classes


@dataclass
class Turn:
    role: str  # "system" | "user" | "assistant"; a document record: "document" (+ "completion", its answer)
    text: str


@dataclass
class Record:
    id: str
    index: int
    file: str
    images: list[Path]  # resolved absolute paths, in order
    turns: list[Turn]
    task: str | None
    notes: list[str] = field(default_factory=list)  # non-fatal remarks, e.g. mode conversions
    metric: str | None = None              # optional eval metric family (see vlbridge.eval.task_metrics)
    references: list[str] | None = None    # optional extra acceptable answers (e.g. 10 VQA answers, 5 captions)

    @property
    def where(self) -> str:
        """Location prefix used in messages, e.g. for ``load_image(..., where=rec.where)``."""
        return f"{self.file}: record {self.id!r} (#{self.index})"

    @property
    def is_document(self) -> bool:
        return bool(self.turns) and self.turns[0].role == DOCUMENT


@dataclass
class SkipReport:
    """Counts and lists every skipped record; nothing is dropped silently."""

    entries: list[DataError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, err: DataError) -> None:
        self.entries.append(err)

    def note(self, msg: str) -> None:
        self.notes.append(msg)

    def counts(self) -> dict[str, int]:
        return dict(Counter(e.kind for e in self.entries).most_common())

    def summary(self, total: int, max_messages: int = 5) -> str:
        if not self.entries:
            lines = ["no records skipped"]
        else:
            per_kind = ", ".join(f"{n} {kind}" for kind, n in self.counts().items())
            lines = [f"skipped {len(self.entries)} of {total} records: {per_kind}"]
            lines += [f"  {e}" for e in self.entries[:max_messages]]
            if len(self.entries) > max_messages:
                lines.append(f"  ... and {len(self.entries) - max_messages} more")
        if self.notes:
            lines.append(f"{len(self.notes)} notes, e.g.: {self.notes[0]}")
        return "\n".join(lines)

    def write_jsonl(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for err in self.entries:
                f.write(json.dumps(err.to_dict(), ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- records


class _Bad(Exception):
    """Internal: a problem found in a record, turned into a DataError by check_record."""

    def __init__(self, kind: str, problem: str):
        super().__init__(kind, problem)
        self.kind = kind
        self.problem = problem


def _record_id(raw: dict[str, Any], index: int) -> str:
    rid = raw.get("id")
    if rid is None:
        return f"#{index}"
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise _Bad("bad_field", f'"id" must be a string, got {type(rid).__name__}')
    return str(rid)


def _image_entries(raw: dict[str, Any]) -> list[str]:
    if "image" in raw and "images" in raw:
        raise _Bad("bad_field", 'give the images as "image" or "images", not both')
    key = "images" if "images" in raw else "image"
    value = raw.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _Bad("bad_field", f'"{key}" must be a string or a list of strings, got {type(value).__name__}')
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _Bad("bad_field", f'"{key}"[{i}] must be a non-empty string, got {item!r}')
    return value


def _resolve_image(rel: str, folder: Path) -> Path:
    """Resolve ``rel`` inside ``folder`` (following symlinks); refuse anything outside it."""
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder):
        raise _Bad("path_escape", f"image path {rel!r} resolves to {path}, outside the image folder {folder}")
    return path


def _check_image_file(rel: str, path: Path, image_modes: ImageModes, max_pixels: int | None) -> str | None:
    """Header-only check of one image; returns a conversion note or None."""
    try:
        with open_header(path, max_pixels) as img:
            mode, info = img.mode, dict(img.info)
    except ImageError as e:
        if e.kind == "missing_image":
            raise _Bad(e.kind, f"image {rel!r} not found (looked for {path})") from None
        raise _Bad(e.kind, f"image {rel!r}: {e.problem}") from None
    if mode == "RGB":
        return None
    if image_modes == "reject":
        raise _Bad("image_mode", f"image {rel!r} has mode {mode!r}, expected RGB (image_modes='reject')")
    return f"image {rel!r}: {describe_conversion(mode, info)}"


def _parse_document(raw: dict[str, Any]) -> list[Turn]:
    """A document record's text (and optional answer) as turns "document" (+ "completion")."""
    if "conversations" in raw:
        raise _Bad("bad_field", 'a record has "conversations" (chat) or "text" (document), not both')
    parts = [Turn(DOCUMENT, raw["text"])]
    if raw.get("answer") is not None:
        parts.append(Turn(COMPLETION, raw["answer"]))
    for turn, key in zip(parts, ("text", "answer")):
        if not isinstance(turn.text, str):
            raise _Bad("bad_field", f'"{key}" must be a string, got {type(turn.text).__name__}')
        if not turn.text.strip():
            raise _Bad("empty_conversation", f'document "{key}" is empty')
    return parts


def _parse_turns(raw: dict[str, Any]) -> list[Turn]:
    if "text" in raw:
        return _parse_document(raw)
    if "answer" in raw:
        raise _Bad("bad_field", '"answer" belongs to a document record (with "text"); a chat record answers in '
                                '"conversations"')
    conv = raw.get("conversations")
    if conv is None or conv == []:
        raise _Bad("empty_conversation", 'missing or empty "conversations" (a chat record) or "text" (a document)')
    if not isinstance(conv, list):
        raise _Bad("bad_field", f'"conversations" must be a list, got {type(conv).__name__}')
    turns = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or "value" not in turn:
            raise _Bad("bad_field", f'conversations[{i}] must be an object with string "from" and "value", got {turn!r:.80}')
        if not isinstance(turn["value"], str):
            raise _Bad("bad_field", f'conversations[{i}]["value"] must be a string, got {type(turn["value"]).__name__}')
        role = _ROLES.get(turn["from"].strip().lower())
        if role is None:
            raise _Bad("bad_roles", f"conversations[{i}] has unknown role {turn['from']!r}")
        if not turn["value"].strip():
            raise _Bad("empty_conversation", f"conversations[{i}] ({turn['from']}) has empty text")
        turns.append(Turn(role, turn["value"]))
    return turns


def _check_roles(turns: list[Turn]) -> None:
    """Optional system turn, then user/assistant alternating, ending with assistant (documents have no roles)."""
    if turns[0].role == DOCUMENT:
        return
    body = turns[1:] if turns[0].role == "system" else turns
    if not body:
        raise _Bad("empty_conversation", "conversation has only a system turn")
    for i, turn in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            pos = i + len(turns) - len(body)
            raise _Bad("bad_roles", f"turn {pos} is {turn.role!r} but {expected!r} was expected (roles must alternate user/assistant, system only first)")
    if body[-1].role != "assistant":
        raise _Bad("bad_roles", "conversation ends with a user turn; training data must end with an assistant answer")


def _check_placeholders(turns: list[Turn], n_images: int) -> None:
    """Match <image> placeholders with images; add the missing one for a lone image of a chat record."""
    for i, turn in enumerate(turns):
        if turn.role == "system" and IMAGE_TOKEN in turn.text:
            raise _Bad("placeholders", f"{IMAGE_TOKEN} placeholder in system turn {i}; images belong in user "
                                       "(read) or assistant (produced) turns")
    count = sum(t.text.count(IMAGE_TOKEN) for t in turns)
    if count == n_images:
        return
    if count == 0 and n_images == 1 and turns[0].role != DOCUMENT:
        first_user = next(t for t in turns if t.role == "user")
        first_user.text = f"{IMAGE_TOKEN}\n{first_user.text}"
        return
    raise _Bad("placeholders", f"{count} {IMAGE_TOKEN} placeholder(s) but {n_images} image(s)")


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _Bad("bad_field", f'"{key}" must be a string, got {type(value).__name__}')
    return value


def _optional_str_list(raw: dict[str, Any], key: str) -> list[str] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise _Bad("bad_field", f'"{key}" must be a non-empty list of non-empty strings, got {value!r:.80}')
    return list(value)


def check_record(
    raw: dict,
    index: int,
    file: str,
    image_folder: Path,
    *,
    check_images: bool = True,
    image_modes: ImageModes = "convert",
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> Record:
    """Validate one raw record and return it as a :class:`Record`; raise :class:`DataError`.

    Image paths are always resolved and confined to ``image_folder``; with
    ``check_images`` the files must also exist and have a readable header within
    ``max_pixels``. Pixels are not decoded here (see :func:`vlbridge.data.images.load_image`).
    """
    check_image_modes(image_modes)
    file = str(file)
    record_id: str = f"#{index}"
    try:
        if not isinstance(raw, dict):
            raise _Bad("bad_field", f"record must be a JSON object, got {type(raw).__name__}")
        record_id = _record_id(raw, index)
        folder = Path(image_folder).resolve()
        rels = _image_entries(raw)
        task = _optional_str(raw, "task")
        metric = _optional_str(raw, "metric")
        references = _optional_str_list(raw, "references")
        turns = _parse_turns(raw)
        _check_roles(turns)
        _check_placeholders(turns, len(rels))
        images = [_resolve_image(rel, folder) for rel in rels]
        notes = []
        if check_images:
            for rel, path in zip(rels, images):
                note = _check_image_file(rel, path, image_modes, max_pixels)
                if note:
                    notes.append(f"{file}: record {record_id!r} (#{index}): {note}")
    except _Bad as bad:
        raise DataError(file, index, record_id, bad.problem, bad.kind) from None
    return Record(id=record_id, index=index, file=file, images=images, turns=turns, task=task, notes=notes,
                  metric=metric, references=references)


def _read_json_list(path: Path) -> list[Any]:
    """Read the top-level list of records or raise a file-level DataError."""
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.json"))
        pick = "test.json" if "test.json" in found else (found[0] if found else "FILE.json")
        holds = f" (it holds {', '.join(found[:6])})" if found else " (it holds no .json file)"
        raise DataError(path, -1, None, f"is a folder, not a JSON file of records: pass {path / pick}{holds}",
                        "missing_file")
    if not path.is_file():
        raise DataError(path, -1, None, "data file not found", "missing_file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(path, -1, None, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", "bad_json") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(path, -1, None, f"cannot read data file: {e}", "bad_json") from None
    if not isinstance(data, list):
        raise DataError(path, -1, None, f"top level must be a JSON list of records, got {type(data).__name__}", "bad_json")
    return data


def load_records(
    json_path: str | Path,
    image_folder: str | Path | None = None,
    *,
    on_error: OnError = "raise",
    report: SkipReport | None = None,
    check_images: bool = True,
    image_modes: ImageModes = "convert",
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> list[Record]:
    """Load and validate every record of a LLaVA-style JSON file.

    ``on_error="raise"`` raises the first :class:`DataError`; ``"skip"`` adds it to
    ``report`` and goes on (without a report, the skips are logged as a warning).
    Conversion notes and duplicate ids go to ``report.notes``. Errors about the
    file itself (missing, invalid JSON, not a list) are always raised.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    check_image_modes(image_modes)
    path = Path(json_path)
    folder = Path(image_folder) if image_folder is not None else path.parent
    data = _read_json_list(path)
    if check_images and not folder.is_dir():
        raise DataError(path, -1, None, f"image folder {folder} does not exist", "missing_folder")

    own_report = report is None
    report = SkipReport() if report is None else report
    records: list[Record] = []
    seen: set[str] = set()
    for index, raw in enumerate(data):
        try:
            rec = check_record(raw, index, str(path), folder, check_images=check_images,
                               image_modes=image_modes, max_pixels=max_pixels)
        except DataError as err:
            if on_error == "raise":
                raise
            report.add(err)
            continue
        if rec.id in seen:
            report.note(f"{rec.where}: duplicate id {rec.id!r}")
        seen.add(rec.id)
        for note in rec.notes:
            report.note(note)
        records.append(rec)
    if own_report and report.entries:
        log.warning("%s: %s", path, report.summary(len(data)))
    return records
