"""lmms-eval model plugin: run lmms-eval's benchmarks on a saved vlbridge model.

    python -m lmms_eval --model vlbridge --model_args pretrained=runs/demo/final,batch_size=8 \\
        --tasks pope,mme --limit 100

Installing lmms-eval beside this project's CPU torch takes a recipe (``make install-lmms`` builds it in
``.venv-lmms``; docs/evaluation.md gives it step by step and a command with a local task).

Registration: ``pyproject.toml`` declares the entry point ``vlbridge`` in the group ``lmms_eval.models``;
lmms-eval (>= 0.7) reads that group when it builds its model registry, so installing vlbridge is enough.
``model_manifest`` is that entry point (a callable returning lmms-eval's ``ModelManifest``).

``VLBridgeLMMS`` is a "simple" lmms-eval model (``is_simple = True``): requests carry a context string and a
``doc_to_visual`` callback that is applied to ``self.task_dict[task][split][doc_id]`` (lmms-eval fills
``task_dict``). Request ``args`` layouts, as lmms-eval builds them:

- ``generate_until``: (context, gen_kwargs, doc_to_visual, doc_id, task, split)
- ``loglikelihood``: (context, continuation or doc_to_target, doc_to_visual, doc_id, task, split), or
  (context, continuation) for the unconditional part of mutual-information scoring
- ``generate_until_multi_round``: (context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split);
  after each round ``doc_to_text(doc, previous_output=[answers so far], round_idx=k,
  previous_round_info=...)`` returns (visuals, context, terminal, round answers, round info); the result
  per request is the list of round answers.

Prompts: a context's ``<image>`` placeholders are kept when they match the images, otherwise one
``<image>`` per image is put before the text (LLaVA's layout); the model's chat template wraps it as one
user turn. Generation is vlbridge's batched KV-cache ``generate``: greedy unless ``temperature > 0``,
``max_new_tokens`` from gen_kwargs (else the ``max_new_tokens`` model arg), text cut at the first
``until`` string; beam search is not supported (num_beams > 1 is refused). Images only (a video or audio
visual is an error). Runs on CPU.

Log-likelihood results follow lmms-eval's own models (e.g. ``llava``, ``llava_hf``): per request a pair
``(loss, is_greedy)``, where ``loss`` is the continuation's mean token negative log-likelihood after the
prompt's assistant prefix (lower = more likely; the continuation starts the assistant's answer, so its
leading whitespace is dropped, and the end-of-turn tokens after it are not scored) and ``is_greedy`` says
whether every continuation token is the model's most likely one. What this gives in lmms-eval's scoring:

- ``multiple_choice`` ``acc`` picks the choice with the lowest loss (lmms-eval's ``argmin``), ``acc_norm``
  the lowest loss per character; ``exact_match`` is the gold choice's ``is_greedy``.
- ``loglikelihood`` tasks: ``acc`` is the share of greedy continuations and the ``perplexity`` metric's
  items are the losses. lmms-eval 0.7.3's built-in scoring of this output type fails for every model (it
  unpacks the list of a document's results, not its one result), and its built-in ``perplexity``
  aggregation, exp(-mean), expects log-likelihoods; such a task declares its own ``process_results`` and an
  aggregation of exp(mean loss) (tests/lmms/tasks/vlbridge_shapes/utils.py has both).
- ``acc_mutual_info`` takes an argmax of loss differences, so it is inverted under this convention (for
  lmms-eval's own models as well).

lmms-eval 0.7.3 turns any result that is not text into a string before scoring, so the pairs are handed back
wrapped in its ``GenerationResult`` (whose text it passes on unchanged). Its response cache
(``--use_cache``) expects text in a ``GenerationResult`` and cannot store them.

lmms-eval is optional: without it the class still works (it then derives from a small stand-in with the
same ``rank``/``world_size``/``task_dict``/``create_from_arg_string``, and returns the plain pairs), so it
can be tested anywhere.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections import defaultdict
from typing import Any, Sequence

from PIL import Image
from tqdm import tqdm

from ..data.records import Turn
from ..data.template import IMAGE_TOKEN
from ..generate import GenerationConfig
from ..inference import Predictor, Query
from ..models.vlm import VLBridgeModel

log = logging.getLogger(__name__)
MODEL_NAME = "vlbridge"
MAX_ROUNDS = 64          # a multi-round task that never signals the end is an error, not an endless loop


class _NoCache:
    def add_partial(self, attr, req, res) -> None:
        pass


class LMMSStandIn:
    """What lmms-eval's ``lmms`` base gives a model, for use without lmms-eval installed."""

    is_simple = True

    def __init__(self) -> None:
        self._rank, self._world_size = 0, 1
        self.cache_hook = _NoCache()
        self.task_dict: dict = {}

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size


try:
    from lmms_eval.api.model import lmms as _Base
    HAVE_LMMS_EVAL = True
except ImportError:
    _Base = LMMSStandIn
    HAVE_LMMS_EVAL = False
try:
    from lmms_eval.api.instance import GenerationResult
except ImportError:
    GenerationResult = None


def model_manifest():
    """Entry point of the ``lmms_eval.models`` group: how lmms-eval finds this model."""
    from lmms_eval.models.registry_v2 import ModelManifest
    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.VLBridgeLMMS")


def prompt_with_images(context: str, n_images: int) -> str:
    if context.count(IMAGE_TOKEN) == n_images:
        return context
    return "".join(IMAGE_TOKEN + "\n" for _ in range(n_images)) + context.replace(IMAGE_TOKEN, "").strip()


def as_images(visuals: Any) -> list[Image.Image]:
    """doc_to_visual output (None, an image, or a possibly nested list) -> RGB images."""
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    images = []
    for v in visuals:
        if isinstance(v, (list, tuple)):
            images.extend(as_images(v))
        elif isinstance(v, Image.Image):
            images.append(v if v.mode == "RGB" else v.convert("RGB"))
        else:
            raise ValueError(f"vlbridge reads images only; got a visual of type {type(v).__name__} "
                             f"({str(v)[:60]!r}): video and audio tasks are not supported")
    return images


def _int_arg(name: str, value: Any, default_for_auto: int | None = None) -> int:
    if isinstance(value, str) and value.startswith("auto") and default_for_auto is not None:
        return default_for_auto
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"model arg {name} must be an integer, got {value!r}") from None
    if out < 1:
        raise ValueError(f"model arg {name} must be >= 1, got {out}")
    return out


class VLBridgeLMMS(_Base):
    """A saved vlbridge model behind lmms-eval's model interface."""

    is_simple = True

    def __init__(self, pretrained: str, batch_size: int | str = 1, max_new_tokens: int | str = 128,
                 seed: int | str = 0, device: str | None = None, max_batch_size: int | str | None = None, **unknown):
        super().__init__()
        if unknown:
            raise ValueError(f"unknown model_args for vlbridge: {sorted(unknown)}; known: pretrained, batch_size, "
                             f"max_new_tokens, seed")
        if device not in (None, "cpu"):
            warnings.warn(f"vlbridge's lmms-eval model runs on CPU; ignoring device={device!r}")
        self.model = VLBridgeModel.from_pretrained(pretrained).eval()
        self.predictor = Predictor(self.model, seed=int(seed))
        self.batch_size = _int_arg("batch_size", batch_size, default_for_auto=8)
        self.max_new_tokens = _int_arg("max_new_tokens", max_new_tokens)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "VLBridgeLMMS":
        """``--model_args`` "pretrained=DIR,batch_size=4" plus the CLI's ``--batch_size``/``--device``.

        lmms-eval's own version passes both, so ``batch_size`` in model_args would be a duplicate keyword
        (the CLI always sends its default ``--batch_size 1``); here model_args win.
        """
        args = dict(item.split("=", 1) for item in arg_string.split(",") if item.strip())
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    # ---- request plumbing -----------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int):
        try:
            return self.task_dict[task][split][doc_id]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"no document {doc_id!r} in task_dict[{task!r}][{split!r}]") from None

    def _visuals(self, doc_to_visual, doc_id, task, split) -> list[Image.Image]:
        return as_images(doc_to_visual(self._doc(task, split, doc_id))) if doc_to_visual is not None else []

    def _query(self, context: str, images: list[Image.Image]) -> Query:
        return Query([Turn("user", prompt_with_images(context, len(images)))], images)

    def _gen_config(self, gen_kwargs: dict) -> tuple[GenerationConfig, list[str]]:
        kw = dict(gen_kwargs or {})
        until = kw.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        if int(kw.get("num_beams") or 1) > 1:
            raise ValueError("vlbridge generation has no beam search (num_beams > 1)")
        temperature = float(kw.get("temperature") or 0.0)
        sample = bool(kw.get("do_sample", False)) or temperature > 0
        cfg = GenerationConfig(max_new_tokens=int(kw.get("max_new_tokens") or self.max_new_tokens), do_sample=sample,
                               temperature=temperature if temperature > 0 else 1.0,
                               top_p=float(kw.get("top_p") or 1.0), top_k=int(kw.get("top_k") or 0))
        return cfg, [u for u in until if u]

    def _generate(self, queries: Sequence[Query], gen_kwargs: dict) -> list[str]:
        """One batch through vlbridge's Predictor (encoding, KV-cache generation, decoding as everywhere else)."""
        self.predictor.gen, until = self._gen_config(gen_kwargs)
        return [cut_at(text, until) for text in self.predictor.answer(queries)]

    # ---- lmms-eval interface ---------------------------------------------------------------------------
    def generate_until(self, requests) -> list[str]:
        groups: dict[str, list[int]] = defaultdict(list)        # same gen_kwargs -> same batch settings
        for i, req in enumerate(requests):
            groups[json.dumps(req.args[1] or {}, sort_keys=True, default=str)].append(i)
        results: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="vlbridge generate", disable=self.rank != 0)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                queries = []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    queries.append(self._query(context, self._visuals(doc_to_visual, doc_id, task, split)))
                gen_kwargs = requests[chunk[0]].args[1]
                for i, text in zip(chunk, self._generate(queries, gen_kwargs)):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", (requests[i].args[0], gen_kwargs), text)
                bar.update(len(chunk))
        bar.close()
        return results  # type: ignore[return-value]

    def continuation_ids(self, continuation: str) -> list[int]:
        """Token ids of a continuation as the start of the assistant's answer (leading space dropped)."""
        return self.predictor.continuation_ids(continuation)

    def _loglikelihood_input(self, req) -> tuple[Query, str]:
        args = req.args
        if len(args) == 2:
            context, target, images = args[0], args[1], []
        else:
            context, target, doc_to_visual, doc_id, task, split = args
            if not isinstance(target, str):
                target = target(self._doc(task, split, doc_id))
            images = self._visuals(doc_to_visual, doc_id, task, split)
        return self._query(context, images), str(target)

    def loglikelihood(self, requests) -> list:
        """Per request ``(loss, is_greedy)``: the continuation's mean token negative log-likelihood and whether
        greedy decoding would produce it (lmms-eval's convention; see the module docstring)."""
        pairs: list[tuple[float, bool]] = []
        for start in tqdm(range(0, len(requests), self.batch_size), desc="vlbridge loglikelihood",
                          disable=self.rank != 0):
            queries, continuations = zip(*(self._loglikelihood_input(r) for r in requests[start:start + self.batch_size]))
            for scored in self.predictor.score(queries, continuations):
                n = len(scored.token_logprobs)
                pairs.append((-scored.logprob / n if n else 0.0, scored.greedy))
        for req, pair in zip(requests, pairs):
            self.cache_hook.add_partial("loglikelihood", req.args[:2], pair)
        return [as_result(pair) for pair in pairs]

    def generate_until_multi_round(self, requests) -> list[list[str]]:
        results = []
        for req in tqdm(requests, desc="vlbridge multi-round", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            images = self._visuals(doc_to_visual, doc_id, task, split)
            answers: list[str] = []
            info = None
            for round_idx in range(1, MAX_ROUNDS + 1):
                answers.append(self._generate([self._query(context, images)], gen_kwargs)[0])
                step = doc_to_text(doc, previous_output=list(answers), round_idx=round_idx, previous_round_info=info)
                if len(step) == 5:
                    visuals, context, terminal, round_res, info = step
                    answers = list(round_res) if round_res is not None else answers
                elif len(step) == 3:
                    visuals, context, terminal = step
                else:
                    raise ValueError(f"{task}: doc_to_text returned {len(step)} values; expected (visuals, context, "
                                     f"terminal, round answers, round info)")
                if terminal:
                    break
                images = as_images(visuals)
            else:
                raise ValueError(f"{task} doc {doc_id}: no terminal signal after {MAX_ROUNDS} rounds")
            results.append(answers)
        return results


def as_result(pair: tuple[float, bool]):
    """A loglikelihood pair as lmms-eval's evaluator passes it to scoring unchanged (see the module docstring)."""
    return GenerationResult(text=pair) if GenerationResult is not None else pair


def unwrap(result) -> tuple[float, bool]:
    """The ``(loss, is_greedy)`` pair of one ``loglikelihood`` result."""
    return result.text if GenerationResult is not None and isinstance(result, GenerationResult) else result


def cut_at(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = min((text.find(u) for u in until if u in text), default=len(text))
    return text[:cut]
