"""Continuous batching over the KV cache: requests join and leave a running batch between decoding steps.

``BatchEngine`` is synchronous and owned by one thread (``scheduler.Scheduler``). Each ``step()``:

1. prefills the newly admitted requests together (left-padded, as ``vlbridge.generate``), picks their first
   token and joins their KV cache to the running batch (``kv_cache.join``);
2. feeds every running row its last token (one forward of ``[B, 1, D]`` over the shared cache) and picks the
   next one;
3. drops finished or cancelled rows (``kv_cache.select``), freeing their place at once.

Positions count each row's real tokens only and padding is masked, so a row generates what it would
generate alone (greedy; sampling too, as every request draws from its own seeded generator). A row ends at
a stop id, after ``max_new_tokens``, when its sink asks to stop (a stop string) or when it is cancelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch
from transformers import DynamicCache

from ..generate import cache_kwargs, filter_logits, last_logits_kwargs
from . import kv_cache


class Sink(Protocol):
    """Where a request's tokens go (called on the engine thread)."""

    def token(self, token_id: int) -> bool: ...                  # True = stop here (e.g. a stop string)
    def finish(self, reason: str, generated: list[int]) -> None: ...   # "stop", "length", "cancelled" or "end"
    def fail(self, error: Exception) -> None: ...


@dataclass
class EngineRequest:
    input_ids: list[int]                       # prompt ids, one image id per image
    pixel_values: torch.Tensor | None          # [n_img, 3, S, S]
    max_new_tokens: int
    sink: Sink
    temperature: float = 0.0                   # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop_ids: Sequence[int] = ()
    ignore_stop: bool = False                  # generate max_new_tokens even past the model's stop ids
    end_ids: Sequence[int] = ()                # ids that end the row with reason "end" (kept as its last id)
    cancelled: bool = False                    # set from any thread; the row is dropped at the next step
    prompt_tokens: int = 0                     # LLM positions of the prompt (visual tokens included), set at prefill
    info: Any = None                           # what the connector's decode_answer reads (Spliced.info), at prefill
    task_type: str | None = None               # routing type of a mixture of adapters (None: the model's default)


@dataclass
class _Row:
    req: EngineRequest
    next_pos: int                              # position id of the token fed next
    token: int = -1                            # last picked token (fed at the next step)
    generated: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None


class BatchEngine:
    def __init__(self, model, stop_ids: Sequence[int], logits_processors: Sequence[Callable] = (),
                 max_batch: int = 32):
        self.model = model.eval()
        self.stop_ids = list(stop_ids)
        self.processors = list(logits_processors)     # (logits [1, V], generated [1, t]) -> logits, per row
        self.max_batch = max_batch
        self.rows: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None          # [B, T] 1 = real token
        self.steps = 0                                 # decoding forwards run (for the bench and tests)
        # the forward's keywords, looked up once: the cache's name in this transformers version, and the LM head
        # on the last position only
        self.cache_key = next(iter(cache_kwargs(model.llm, None)))
        self.last_logits = last_logits_kwargs(model.llm)
        default = model.connector.task_types([None])                # None: the model does not route by task
        self.default_type = default[0] if default else None

    def routing(self, requests: Sequence[EngineRequest]):
        """The task routing of a batch of rows (each request's type, else the model's default)."""
        if self.default_type is None or all(r.task_type is None for r in requests):
            return self.model.routing(types=None)
        return self.model.routing(types=[r.task_type or self.default_type for r in requests])

    @property
    def free(self) -> int:
        return self.max_batch - len(self.rows)

    # ---- picking tokens ---------------------------------------------------------------------------------
    def _pick_all(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Next token of every row from logits [B, V] (greedy rows without processors in one argmax)."""
        greedy = logits.argmax(-1).tolist() if not self.processors else None
        return [greedy[i] if greedy is not None and row.req.temperature <= 0 else self._pick(row, logits[i])
                for i, row in enumerate(rows)]

    def _pick(self, row: _Row, logits: torch.Tensor) -> int:
        """Next token of one row from its logits [V]."""
        logits = logits[None].float()                                            # [1, V]
        for proc in self.processors:
            logits = proc(logits, torch.tensor([row.generated], dtype=torch.long, device=logits.device))
        req = row.req
        if req.temperature <= 0:
            return int(logits.argmax(-1))
        if row.generator is None:
            row.generator = torch.Generator()
            row.generator.manual_seed(req.seed if req.seed is not None else int(torch.randint(2**62, ()).item()))
        probs = filter_logits(logits / req.temperature, 0, req.top_p).softmax(-1)
        return int(torch.multinomial(probs.cpu(), 1, generator=row.generator))   # the seed's draw on any device

    def _accept(self, row: _Row, token: int) -> bool:
        """Record a picked token; True when the row is finished (and reported so)."""
        req = row.req
        if req.cancelled:
            req.sink.finish("cancelled", row.generated)
            return True
        if token in req.end_ids:
            req.sink.finish("end", row.generated + [token])
            return True
        if (token in self.stop_ids and not req.ignore_stop) or token in req.stop_ids:
            req.sink.finish("stop", row.generated)
            return True
        row.generated.append(token)
        row.token = token
        if req.sink.token(token):
            req.sink.finish("stop", row.generated)
            return True
        if len(row.generated) >= req.max_new_tokens:
            req.sink.finish("length", row.generated)
            return True
        return False

    # ---- admission --------------------------------------------------------------------------------------
    @torch.no_grad()
    def admit(self, requests: list[EngineRequest]) -> None:
        """Prefill ``requests`` together and add the unfinished ones to the running batch."""
        requests = [r for r in requests if not self._drop_cancelled(r)]
        if not requests:
            return
        if len(requests) > self.free:
            raise ValueError(f"{len(requests)} requests for {self.free} free rows")
        try:
            cache, mask, logits, last_pos = self._prefill(requests)
        except Exception as e:                      # one bad request must not fail the others: retry alone
            if len(requests) == 1:
                requests[0].sink.fail(e)
                return
            for r in requests:
                self.admit([r])
            return
        for r, n in zip(requests, mask.sum(1).tolist()):
            r.prompt_tokens = int(n)
        rows = [_Row(r, int(p) + 1) for r, p in zip(requests, last_pos)]
        picked = self._pick_all(rows, logits)
        keep = [i for i, row in enumerate(rows) if not self._accept(row, picked[i])]
        if not keep:
            return
        index = torch.tensor(keep, dtype=torch.long, device=mask.device)
        mask = kv_cache.select(cache, mask, index)
        if self.cache is None:
            self.cache, self.mask = cache, mask
        else:
            self.mask = kv_cache.join(self.cache, self.mask, cache, mask)
        self.rows += [rows[i] for i in keep]

    def _prefill(self, requests: list[EngineRequest]):
        pixels = [r.pixel_values for r in requests if r.pixel_values is not None and len(r.pixel_values)]
        s, _ = self.model.embed([torch.tensor(r.input_ids, dtype=torch.long) for r in requests], None,
                                torch.cat(pixels) if pixels else None, padding_side="left")
        for r, info in zip(requests, s.info or [None] * len(requests)):
            r.info = info
        cache = DynamicCache()
        with self.routing(requests):
            out = self.model.llm(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask,  # [b, T, D], [b, T]
                                 position_ids=s.position_ids, use_cache=True, **{self.cache_key: cache},
                                 **self.last_logits)
        return cache, s.attention_mask, out.logits[:, -1], s.position_ids[:, -1]               # logits [b, V]

    def _drop_cancelled(self, req: EngineRequest) -> bool:
        if req.cancelled:
            req.sink.finish("cancelled", [])
        return req.cancelled

    # ---- decoding ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> None:
        """One decoding step for every running row; finished and cancelled rows leave the batch."""
        if not self.rows:
            return
        B = len(self.rows)
        device = self.mask.device
        tokens = torch.tensor([r.token for r in self.rows], dtype=torch.long, device=device)
        pos = torch.tensor([[r.next_pos] for r in self.rows], dtype=torch.long, device=device)  # [B, 1]
        self.mask = torch.cat([self.mask, torch.ones(B, 1, dtype=self.mask.dtype, device=device)], 1)  # [B, T+1]
        embeds = self.model.llm.get_input_embeddings()(tokens)[:, None]                          # [B, 1, D]
        with self.routing([r.req for r in self.rows]):
            out = self.model.llm(inputs_embeds=embeds, attention_mask=self.mask, position_ids=pos, use_cache=True,
                                 **{self.cache_key: self.cache}, **self.last_logits)
        logits = out.logits[:, -1]                                                               # [B, V]
        self.steps += 1
        keep = []
        for i, (row, token) in enumerate(zip(self.rows, self._pick_all(self.rows, logits))):
            row.next_pos += 1
            if not self._accept(row, token):
                keep.append(i)
        if len(keep) < B:
            self._keep(keep)

    def sweep(self) -> None:
        """Drop cancelled rows now (between steps), so their places are free for waiting requests."""
        keep = [i for i, r in enumerate(self.rows) if not r.req.cancelled]
        for r in self.rows:
            if r.req.cancelled:
                r.req.sink.finish("cancelled", r.generated)
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _keep(self, keep: list[int]) -> None:
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache, self.mask = None, None
            return
        self.mask = kv_cache.select(self.cache, self.mask, torch.tensor(keep, dtype=torch.long, device=self.mask.device))
