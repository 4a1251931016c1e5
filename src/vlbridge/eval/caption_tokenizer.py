"""Caption tokenization for the COCO caption metrics: pycocoevalcap's PTB tokenizer, or a Python stand-in.

COCO caption scores are computed on text tokenized by the Stanford PTB tokenizer (lowercased), with the
punctuation tokens of ``pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS`` removed. That tokenizer is a
Java program shipped inside pycocoevalcap; it is used whenever ``java`` is on the PATH (backend
``"ptb-java"``): the same jar, class and flags as pycocoevalcap's ``PTBTokenizer`` (plus an explicit UTF-8
encoding), fed on stdin rather than through a temp file written into site-packages.

Without Java the fallback ``ptb_like_tokenize`` (backend ``"ptb-python"``) applies the same rules as
far as is practical: lowercase; ``"`` quotes dropped; brackets become ``-lrb-``/``-rrb-``/``-lsb-``...
(kept, as the Java path keeps them: the punctuation list has them in upper case); ``, ; : ? ! ... --`` split
off (but not inside numbers such as "1,000" or "3:30"); clitics split (``don't`` -> ``do n't``,
``dog's`` -> ``dog 's``, ``they've`` -> ``they 've``); a final period split off unless the word is an
acronym ("u.s.") or a common abbreviation ("dr."); ``$`` and ``%`` split from numbers; then the same
punctuation tokens are removed. On ShapesWorld-style captions both backends give identical tokens; on
free text they can differ in rare cases (PTB's long abbreviation list, unusual quote placement).
Which backend ran is reported with the scores.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

_REMOVED = frozenset(PUNCTUATIONS)
_JAR = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
JAVA_TIMEOUT_S = 600
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc inc ltd corp mt ft lt gen col capt rev sgt".split())
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SPLITS = [
    (re.compile(r"\.\.\.|--"), r" \g<0> "),
    (re.compile(r"[?!]+"), r" \g<0> "),
    (re.compile(r"(?<!\d)[,:]|[,:](?!\d)"), r" \g<0> "),
    (re.compile(r";"), " ; "),
    (re.compile(r"\$|%|="), r" \g<0> "),
    (re.compile(r"#(?=\d)"), "# "),
]


def _split_word(tok: str) -> list[str]:
    if re.fullmatch(r"'[a-z]'", tok):                      # rock 'n' roll
        return [tok]
    out_front, out_back = [], []
    if tok.startswith("'") and len(tok) > 1 and not _CLITIC.match(tok):
        out_front, tok = ["`"], tok[1:]
    if tok.endswith("'") and len(tok) > 1:
        out_back, tok = ["'"], tok[:-1]
    if tok.endswith(".") and len(tok) > 1 and tok != "...":
        stem = tok[:-1]
        if "." not in stem and stem not in _ABBREVIATIONS:
            out_back, tok = ["."] + out_back, stem
    m = _CLITIC.match(tok)
    middle = [m.group(1), m.group(2)] if m else [tok]
    return out_front + middle + out_back


def ptb_like_tokenize(text: str) -> str:
    """One caption -> space-joined lowercase tokens without punctuation (the Python fallback)."""
    text = " ".join(text.lower().split()).replace('"', " ")
    for bracket, name in _BRACKETS.items():
        text = text.replace(bracket, f" {name} ")
    for pattern, repl in _SPLITS:
        text = pattern.sub(repl, text)
    tokens = [t for word in text.split() for t in _split_word(word)]
    return " ".join(t for t in tokens if t not in _REMOVED)


def _java_tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's PTB tokenizer: the same jar, class and flags as its ``PTBTokenizer``, fed on stdin
    (no temp file in site-packages, Java's progress line captured) and the same punctuation removal."""
    lines = [" ".join(c.split()) for v in captions.values() for c in v]     # one caption per line
    cmd = ["java", "-cp", str(_JAR), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
           "-encoding", "utf-8"]
    proc = subprocess.run(cmd, input="".join(line + "\n" for line in lines).encode("utf-8"), capture_output=True,
                          timeout=JAVA_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"exit code {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines) or any(extra.strip() for extra in out[len(lines):]):
        raise RuntimeError(f"{len(lines)} captions in, {len(out)} lines out")
    tokens = iter(" ".join(t for t in line.split() if t not in _REMOVED) for line in out)
    return {k: [next(tokens) for _ in v] for k, v in captions.items()}


def tokenize_captions(captions: dict[str, list[str]], backend: str = "auto") -> tuple[dict[str, list[str]], str]:
    """{key: [caption, ...]} -> ({key: [tokenized caption, ...]}, backend used).

    backend: "auto" (Java when available), "java" or "python".
    """
    if backend not in ("auto", "java", "python"):
        raise ValueError(f"unknown tokenizer backend {backend!r}; expected auto, java or python")
    if backend != "python" and shutil.which("java"):
        try:
            return _java_tokenize(captions), "ptb-java"
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            if backend == "java":
                raise
            warnings.warn(f"Java PTB tokenizer failed ({e}); using the Python fallback tokenizer")
    elif backend == "java":
        raise RuntimeError("backend 'java' requested but no java executable is on the PATH")
    return {k: [ptb_like_tokenize(c) for c in v] for k, v in captions.items()}, "ptb-python"
