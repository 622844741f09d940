"""Text data for language models: reading files, vocabularies, truncated-BPTT batches."""

from lstmkit.data.batching import batchify, get_window, num_windows, windows
from lstmkit.data.text import LEVELS, TextDataError, read_text, read_tokens, tokenize
from lstmkit.data.vocab import EOS, UNK, Vocab

__all__ = [
    "EOS",
    "LEVELS",
    "UNK",
    "TextDataError",
    "Vocab",
    "batchify",
    "get_window",
    "num_windows",
    "read_text",
    "read_tokens",
    "tokenize",
    "windows",
]
