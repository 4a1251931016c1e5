"""Training data: load and validate records, and iterate micro-batches in a resumable, seeded order.

The order of epoch ``e`` is a permutation drawn from ``seed`` and ``e`` alone, so the data position
(epoch, micro-batches consumed) is all a checkpoint needs to continue exactly where it stopped.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import DataConfig, TrainConfig
from ..data.dataset import Batch, InstructionDataset, collate
from ..data.records import SkipReport, load_records
from ..errors import UserError
from .distributed import DistContext, rank_slice


def data_files(cfg: DataConfig) -> tuple[Path, Path | None]:
    if cfg.path is None:
        raise UserError("no training data: pass --data DIR (e.g. the output of `vlbridge data shapes`)")
    root = Path(cfg.path)
    if root.is_file():
        return root, None
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} does not exist")
    train = root / cfg.train_file
    val = root / cfg.val_file if cfg.val_file else None
    return train, (val if val is not None and val.is_file() else None)


def load_split(path: Path, cfg: DataConfig, report: SkipReport):
    return load_records(path, cfg.image_folder, on_error="skip" if cfg.on_bad_record == "skip" else "raise",
                        report=report, image_modes=cfg.image_modes, max_pixels=cfg.max_pixels)


def make_dataset(records, model, cfg: DataConfig, report: SkipReport, for_generation: bool = False) -> InstructionDataset:
    return InstructionDataset(records, model.builder, model.vision.image_transform(), model.cfg.llm.max_length,
                              model.visual_tokens_per_image(), report,
                              on_error="skip" if cfg.on_bad_record == "skip" else "raise",
                              image_modes=cfg.image_modes, max_pixels=cfg.max_pixels, for_generation=for_generation)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


GROUP_BATCHES = 50      # batches per length-sorted group (as HF's LengthGroupedSampler's mega-batches)


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """One epoch's batches of dataset indices (the ragged tail dropped), deterministic by (seed, epoch).

    With ``group_by_length`` the shuffled order is cut into groups of GROUP_BATCHES batches, each group is
    sorted by length so a batch holds records of similar length (less padding), and the batches are then
    shuffled so the epoch does not run short-to-long.
    """
    order = epoch_order(len(lengths), seed, epoch)
    n_batches = len(order) // batch_size
    order = order[:n_batches * batch_size]
    if group_by_length:
        group = GROUP_BATCHES * batch_size
        order = [i for start in range(0, len(order), group)
                 for i in sorted(order[start:start + group], key=lambda i: -lengths[i])]
    batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    if group_by_length:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
        batches = [batches[i] for i in torch.randperm(n_batches, generator=g).tolist()]
    return batches


class BatchStream:
    """Endless micro-batches; ``position`` = (epoch, batches consumed in it) after each one.

    Distributed (``ctx.world`` > 1), the order is cut into global batches of ``batch_size x world`` and
    this rank gets its slice of each, so the position is the same on every rank.
    """

    def __init__(self, dataset: InstructionDataset, cfg: TrainConfig, epoch: int = 0, batch_in_epoch: int = 0,
                 ctx: DistContext = DistContext()):
        if len(dataset) == 0:
            raise UserError("the training set is empty (see the skipped-records summary above)")
        if len(dataset) < ctx.world:
            raise UserError(f"{len(dataset)} training record(s) cannot feed {ctx.world} processes")
        self.dataset, self.cfg, self.ctx = dataset, cfg, ctx
        self.epoch, self.batch_in_epoch = epoch, batch_in_epoch
        self.batch_size = min(cfg.batch_size * ctx.world, len(dataset))     # the global batch
        self._iter = None

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.batch_in_epoch

    def _epoch_loader(self):
        lengths = [self.dataset.length(i) for i in range(len(self.dataset))] if self.cfg.group_by_length else \
            [0] * len(self.dataset)
        batches = epoch_batches(lengths, self.batch_size, self.cfg.seed, self.epoch,
                                self.cfg.group_by_length)[self.batch_in_epoch:]
        batches = [rank_slice(b, self.ctx) for b in batches]
        return iter(torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate,
                                                num_workers=self.cfg.num_workers))

    def __next__(self) -> Batch:
        while True:
            if self._iter is None:
                self._iter = self._epoch_loader()
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch, self.batch_in_epoch, self._iter = self.epoch + 1, 0, None
                continue
            self.batch_in_epoch += 1
            if len(batch):
                return batch
