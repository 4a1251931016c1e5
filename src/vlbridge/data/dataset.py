"""Training/eval dataset over validated records, and the collator that batches them.

Records are tokenized once at load time (so an over-long sequence is caught up front and reported with
its record id); images are decoded on access. Each sample keeps ONE image placeholder id per image; the
model expands it to that image's visual tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .image_transform import ImageTransform
from .images import ImageError, load_image
from .records import DataError, Record, SkipReport
from .template import SequenceBuilder


@dataclass
class Sample:
    input_ids: torch.Tensor          # [L] text ids, one image_token_id per image
    labels: torch.Tensor             # [L] -100 outside assistant spans
    pixel_values: torch.Tensor       # [n_img, 3, S, S] (n_img may be 0)
    record: Record


@dataclass
class Batch:
    input_ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    pixel_values: torch.Tensor | None          # [sum n_img, 3, S, S]
    image_counts: list[int]
    records: list[Record] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


class InstructionDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[Record], builder: SequenceBuilder, transform: ImageTransform,
                 max_length: int, visual_tokens_per_image: int, report: SkipReport, on_error: str = "skip",
                 image_modes: str = "convert", max_pixels: int | None = None, for_generation: bool = False):
        self.builder, self.transform, self.report = builder, transform, report
        self.on_error, self.image_modes, self.max_pixels = on_error, image_modes, max_pixels
        self.for_generation, self.visual_tokens_per_image = for_generation, visual_tokens_per_image
        self.items: list[tuple[Record, list[int], list[int]]] = []
        for rec in records:
            ids, labels = builder.build(rec.turns, for_generation=for_generation)
            total = len(ids) - len(rec.images) + len(rec.images) * visual_tokens_per_image
            if total > max_length:
                self._bad(DataError(rec.file, rec.index, rec.id, f"sequence of {total} tokens ({len(rec.images)} "
                                    f"image(s) x {visual_tokens_per_image} visual tokens) exceeds the model's "
                                    f"limit of {max_length}", "too_long"))
                continue
            self.items.append((rec, ids, labels))

    def length(self, i: int) -> int:
        """Sequence length of item i with its images expanded (what the model will run)."""
        rec, ids, _ = self.items[i]
        return len(ids) + len(rec.images) * (self.visual_tokens_per_image - 1)

    def _bad(self, err: DataError) -> None:
        if self.on_error != "skip":
            raise err
        self.report.add(err)

    def __len__(self) -> int:
        return len(self.items)

    def load_pixels(self, rec: Record) -> torch.Tensor:
        images = []
        for path in rec.images:
            kw = {"max_pixels": self.max_pixels} if self.max_pixels else {}
            image, _ = load_image(path, image_modes=self.image_modes, where=f"record {rec.id!r}", **kw)
            images.append(self.transform(image))
        if not images:
            return torch.zeros(0, 3, self.transform.size, self.transform.size)
        return torch.stack(images)

    def __getitem__(self, i: int) -> Sample | None:
        rec, ids, labels = self.items[i]
        try:
            pixels = self.load_pixels(rec)
        except ImageError as e:
            self._bad(DataError(rec.file, rec.index, rec.id, str(e), getattr(e, "kind", "unreadable_image")))
            return None
        return Sample(torch.tensor(ids), torch.tensor(labels), pixels, rec)


def collate(samples: list[Sample | None]) -> Batch:
    samples = [s for s in samples if s is not None]      # unreadable images were counted by the dataset
    pixels = [s.pixel_values for s in samples if len(s.pixel_values)]
    return Batch(input_ids=[s.input_ids for s in samples], labels=[s.labels for s in samples],
                 pixel_values=torch.cat(pixels) if pixels else None,
                 image_counts=[len(s.pixel_values) for s in samples], records=[s.record for s in samples])
