"""``memgpt-jax chat``: an interactive REPL over a language model.

The conversation is kept as alternating turns rendered as text::

    [system prompt]\\n
    User: ...\\n
    Assistant: ...\\n

Before each reply the prompt is rebuilt from the newest turns that fit in the
context window (``max_len`` minus the tokens reserved for the reply); older
turns are dropped and the user is told how many. Replies stream token by
token and end at EOS, at the next ``User:`` turn marker, or at the reply limit.
Commands: ``/reset`` clears the history, ``/history`` shows it, ``/quit`` ends.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, TextIO

from memgpt_jax.apps.generate import Generator, Sampling, stop_cut
from memgpt_jax.data.pairs_pipeline import encode_prompt


class ChatSession:
    """``pair_prompt``: for a model fine-tuned on prompt -> target pairs (chats, KVRET), a
    function rendering ``[(role, text)]`` (roles ``user`` / ``assistant``) as the training
    prompt; the model then reads ``[BOS] prompt [SEP]`` and its reply ends at EOS, and the
    oldest turns are dropped until that fits (``multi_turn``: a run trained with
    ``data.multi_turn`` reads earlier replies as ``[SEP] reply [EOS]``). Without it the
    model continues the conversation as plain text."""

    def __init__(self, generator: Generator, tokenizer: Any, *, max_new_tokens: int = 128,
                 sampling: Sampling = Sampling(), seed: int = 0, system: str = "",
                 user_prefix: str = "User: ", bot_prefix: str = "Assistant: ",
                 pair_prompt: Callable[[list[tuple[str, str]]], str] | None = None,
                 multi_turn: bool = False) -> None:
        self.pair_prompt, self.multi_turn = pair_prompt, multi_turn
        self.generator, self.tokenizer = generator, tokenizer
        self.max_new_tokens, self.sampling, self.seed = max_new_tokens, sampling, seed
        self.system, self.user_prefix, self.bot_prefix = system, user_prefix, bot_prefix
        self.history: list[tuple[str, str]] = []  # ("user" | "bot", text)
        budget = generator.config.max_len - max_new_tokens
        if budget < 16:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves {budget} tokens of the "
                             f"{generator.config.max_len}-token context for the conversation")
        self.budget = budget
        self.turns = 0

    def _render(self, role: str, text: str) -> str:
        return (self.user_prefix if role == "user" else self.bot_prefix) + text.strip() + "\n"

    def build_prompt(self) -> tuple[list[int], int]:
        """Prompt ids for the next reply and how many of the oldest turns were left out."""
        if self.pair_prompt is not None:
            return self._build_pair_prompt()
        tok = self.tokenizer
        head = [tok.bos_id] + (tok.encode(self.system.strip() + "\n").tolist() if self.system.strip() else [])
        tail = tok.encode(self.bot_prefix.rstrip()).tolist()
        used = len(head) + len(tail)
        kept: list[list[int]] = []
        for role, text in reversed(self.history):
            ids = tok.encode(self._render(role, text)).tolist()
            if used + len(ids) > self.budget:
                break
            kept.append(ids)
            used += len(ids)
        dropped = len(self.history) - len(kept)
        if not kept and self.history:  # the newest turn alone is too long: keep its end
            ids = tok.encode(self._render(*self.history[-1])).tolist()
            kept = [ids[len(ids) - (self.budget - len(head) - len(tail)):]]
            dropped = len(self.history) - 1
        prompt = head + [i for ids in reversed(kept) for i in ids] + tail
        return prompt, dropped

    def _build_pair_prompt(self) -> tuple[list[int], int]:
        tok = self.tokenizer
        turns = [("user" if role == "user" else "assistant", text) for role, text in self.history]
        for dropped in range(len(turns)):
            ids = encode_prompt(tok, self.pair_prompt(turns[dropped:]), self.multi_turn)
            if len(ids) <= self.budget:
                return ids, dropped
        return [ids[0], *ids[len(ids) - self.budget + 1:]], len(turns) - 1  # the newest alone: its end

    def reply(self, user_text: str, on_text: Callable[[str], None] | None = None) -> tuple[str, int]:
        """Adds the user's turn, generates the reply (streamed to ``on_text``); returns
        ``(reply, dropped_turns)``."""
        self.history.append(("user", user_text))
        prompt, dropped = self.build_prompt()
        stop = [self.user_prefix.strip(), "\n" + self.user_prefix.strip()]
        pending = {"text": ""}

        def should_stop(_: int, ids: list[int]) -> int | None:
            return stop_cut(ids, self.tokenizer, stop)

        def on_chunk(rows: list[list[int]]) -> None:
            if on_text is None:
                return
            text = self.tokenizer.decode(rows[0]).rstrip("\ufffd")
            # hold back a possible beginning of the stop marker
            safe = len(text)
            for s in stop:
                for k in range(min(len(s), len(text)), 0, -1):
                    if text.endswith(s[:k]):
                        safe = min(safe, len(text) - k)
                        break
            text = text[:safe]
            if len(text) > len(pending["text"]) and text.startswith(pending["text"]):
                on_text(text[len(pending["text"]):])
                pending["text"] = text

        ids, _ = self.generator.generate_ids([prompt], max_new_tokens=self.max_new_tokens, sampling=self.sampling,
                                             seed=self.seed + self.turns, should_stop=should_stop,
                                             on_chunk=on_chunk)
        text = self.tokenizer.decode(ids[0])
        for s in stop:
            if s in text:
                text = text[: text.find(s)]
        text = text.strip()
        if on_text is not None and len(text) > len(pending["text"].strip()):
            rest = text[len(pending["text"].strip()):] if text.startswith(pending["text"].strip()) else ""
            if rest:
                on_text(rest)
        self.history.append(("bot", text))
        self.turns += 1
        return text, dropped


def run_repl(session: ChatSession, *, read: Callable[[str], str] = input, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up per call (a redirected stdout counts)
    out.write("memgpt-jax chat: type a message; /reset clears the history, /history shows it, /quit ends.\n")
    out.flush()
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            session.history.clear()
            out.write("(history cleared)\n")
            continue
        if line == "/history":
            for role, text in session.history:
                out.write(session._render(role, text))
            continue
        out.write("bot> ")
        out.flush()

        def stream(piece: str) -> None:
            out.write(piece)
            out.flush()

        _, dropped = session.reply(line, on_text=stream)
        out.write("\n")
        if dropped:
            out.write(f"(context window: the {dropped} oldest turn{'s' if dropped != 1 else ''} "
                      f"no longer fit in {session.budget} tokens and {'were' if dropped != 1 else 'was'} left out)\n")
        out.flush()
