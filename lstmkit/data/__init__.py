"""Text data for language models: reading files, vocabularies, truncated-BPTT batches."""

from lstmkit.data.vocab import EOS, UNK, Vocab

__all__ = ["EOS", "UNK", "Vocab"]
