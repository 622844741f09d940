"""Reading text files into token lists, at character or word level, or in Penn Treebank format.

Levels:
  "char"  every Unicode character is a token, newlines included (char-rnn style)
  "word"  tokens split on whitespace, "<eos>" appended at the end of every line
          (PyTorch's word_language_model convention)
  "ptb"   Penn Treebank as distributed by Mikolov (one sentence per line, lowercased, "N" for
          numbers, "<unk>" already in the text): word level, "<eos>" per line, blank lines
          skipped, and the file's own "<unk>" is the vocabulary's unknown token

Errors name the file and say what to do: a missing or empty file, or bytes that are not UTF-8
(with the line, column and byte offset of the first bad byte; `errors="replace"` turns such bytes
into U+FFFD instead).
"""

from __future__ import annotations

import os
from pathlib import Path

from lstmkit.data.vocab import EOS

LEVELS = ("char", "word", "ptb")


class TextDataError(ValueError):
    """A text file cannot be used: missing, empty, or not valid UTF-8."""


def read_text(path: str | os.PathLike, errors: str = "strict") -> str:
    """The whole file as a str; errors="strict" (default) or "replace" for undecodable bytes."""
    path = Path(path)
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r}")
    if not path.exists():
        raise TextDataError(f"text file {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise TextDataError(f"{str(path)!r} is not a file (a directory?); pass a text file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise TextDataError(
            f"{path}: byte 0x{raw[e.start]:02x} at byte offset {e.start} (line {line}, column "
            f"{col}) is not valid UTF-8. Convert the file to UTF-8 (e.g. `iconv -f latin1 -t "
            f"utf-8`), or pass --encoding-errors replace (Python: errors='replace') to turn "
            f"undecodable bytes into U+FFFD"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte-order mark is not content
    if not text.strip():
        raise TextDataError(
            f"text file {str(path)!r} is empty (or only whitespace); a "
            f"language model needs text to learn from"
        )
    return text


def tokenize(text: str, level: str) -> list[str]:
    """Split text into tokens at `level` ("char", "word" or "ptb"); see the module docstring."""
    if level == "char":
        return list(text)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    tokens: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if level == "ptb" and not words:
            continue
        tokens.extend(words)
        tokens.append(EOS)
    return tokens


def read_tokens(path: str | os.PathLike, level: str, errors: str = "strict") -> list[str]:
    """read_text + tokenize."""
    tokens = tokenize(read_text(path, errors=errors), level)
    if not tokens:
        raise TextDataError(f"{path} gives no tokens at level {level!r}")
    return tokens


def prompt_tokens(text: str, level: str) -> list[str]:
    """Tokens of a priming prompt: like tokenize, but no "<eos>" after the last (open) line."""
    if level == "char":
        return list(text)
    lines = text.split("\n")
    tokens: list[str] = []
    for i, line in enumerate(lines):
        tokens.extend(line.split())
        if i < len(lines) - 1:
            tokens.append(EOS)
    return tokens


def detokenize(tokens: list[str], level: str) -> str:
    """Back to text: characters joined; words joined by spaces with "<eos>" as a newline."""
    if level == "char":
        return "".join(tokens)
    out, line = [], []
    for t in tokens:
        if t == EOS:
            out.append(" ".join(line) + "\n")
            line = []
        else:
            line.append(t)
    return "".join(out) + " ".join(line)
