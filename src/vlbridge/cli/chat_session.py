"""The interactive loop of `vlbridge chat`: slash commands, the conversation, and the model's length limit.

At a terminal it prompts with ``you>``, edits lines with readline and prints ``model> ANSWER``; with piped
input it prints only the answers, one per line, and its notices go to stderr. A conversation that would
pass the model's length (prompt + visual tokens + answer budget) loses its oldest exchanges first, with a
warning; the image stays attached to the first remaining question.
"""
from __future__ import annotations

import sys

from ..data.images import ImageError, load_image
from ..data.records import Turn
from ..errors import did_you_mean
from ..inference import Predictor, Query

COMMANDS = {
    "/help": "list these commands",
    "/image PATH": "attach another image (starts a new conversation)",
    "/reset": "start a new conversation with the same image",
    "/quit": "leave (Ctrl-D does too)",
}


def commands_help() -> str:
    return "commands:\n" + "\n".join(f"  {name:<12} {what}" for name, what in COMMANDS.items())


class ChatSession:
    def __init__(self, predictor: Predictor, image=None, image_path: str | None = None,
                 interactive: bool | None = None):
        self.predictor = predictor
        self.image, self.image_path = image, image_path
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.exchanges: list[tuple[str, str]] = []          # (question, answer), oldest first

    # ---- output -----------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A notice: on stdout at a terminal, on stderr when piped (stdout holds only answers)."""
        print(text, file=sys.stdout if self.interactive else sys.stderr, flush=True)

    def show_answer(self, answer: str) -> None:
        print(f"model> {answer}" if self.interactive else answer, flush=True)

    # ---- the conversation -----------------------------------------------------------------------------
    def turns(self, question: str, exchanges: list[tuple[str, str]]) -> list[Turn]:
        """The conversation as turns; the image placeholder goes in front of the first question."""
        turns = []
        for q, a in exchanges:
            turns += [Turn("user", q), Turn("assistant", a)]
        turns.append(Turn("user", question))
        if self.image is not None and not any("<image>" in t.text for t in turns):
            turns[0] = Turn("user", "<image>\n" + turns[0].text)
        return turns

    def length(self, turns: list[Turn]) -> int:
        """Positions the model needs: the prompt with every image's visual tokens, plus the answer budget."""
        model = self.predictor.model
        ids, _ = model.builder.build(turns, for_generation=True)
        images = ids.count(model.image_token_id)
        return len(ids) + images * (model.visual_tokens_per_image() - 1) + self.predictor.gen.max_new_tokens

    def fit(self, question: str) -> list[Turn] | None:
        """The turns to send, dropping the oldest exchanges past the model's length; None if the question
        alone does not fit."""
        limit = self.predictor.model.cfg.llm.max_length
        dropped = 0
        while self.length(self.turns(question, self.exchanges)) > limit:
            if not self.exchanges:
                self.say(f"warning: this question with the image and the {self.predictor.gen.max_new_tokens}-token "
                         f"answer budget is longer than the model's {limit} positions; shorten it")
                return None
            self.exchanges.pop(0)
            dropped += 1
        if dropped:
            self.say(f"warning: the conversation reached the model's {limit}-position limit; dropped the oldest "
                     f"{dropped} exchange(s) ({len(self.exchanges)} kept). /reset starts over")
        return self.turns(question, self.exchanges)

    def ask(self, question: str) -> None:
        turns = self.fit(question)
        if turns is None:
            return
        images = [self.image] if self.image is not None else []
        answer = self.predictor.answer([Query(turns, images)])[0]
        self.exchanges.append((question, answer))
        self.show_answer(answer)

    # ---- commands ---------------------------------------------------------------------------------------
    def attach(self, path: str) -> None:
        try:
            self.image = load_image(path, where=path)[0]
        except (ImageError, OSError) as e:
            self.say(f"cannot use {path}: {e}")
            return
        self.image_path, self.exchanges = path, []
        self.say(f"image: {path} (new conversation)")

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the session should end."""
        text = line.strip()
        if not text:
            return True
        if not text.startswith("/"):
            self.ask(text)
            return True
        command, _, arg = text.partition(" ")
        if command == "/quit":
            return False
        if command == "/help":
            self.say(commands_help())
        elif command == "/reset":
            self.exchanges = []
            self.say("new conversation" + (f" (image {self.image_path} kept)" if self.image is not None else ""))
        elif command == "/image":
            if arg.strip():
                self.attach(arg.strip())
            else:
                self.say("usage: /image PATH")
        else:
            names = [name.split()[0] for name in COMMANDS]
            self.say(f"unknown command {command}{did_you_mean(command, names)}; /help lists the commands")
        return True

    def run(self) -> int:
        if self.interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:
                pass
            self.say(commands_help())
        if self.image is None:
            self.say("no image attached: the model answers from text alone (/image PATH attaches one)")
        prompt = "you> " if self.interactive else ""
        while True:
            try:
                line = input(prompt)
            except EOFError:
                if self.interactive:
                    print()
                return 0
            if not self.handle(line):
                return 0

