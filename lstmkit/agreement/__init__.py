"""Subject-verb agreement: a sentence generator, readers for the public test sets, and a scorer
for any language model (see grammar.py, readers.py, score.py)."""

from lstmkit.agreement.grammar import AgreementGrammar, AgreementSentence
from lstmkit.agreement.readers import (
    PairItem,
    PrefixItem,
    from_generated,
    read_gulordava,
    read_linzen,
    read_marvin_linzen,
)
from lstmkit.agreement.score import (
    AgreementReport,
    format_report,
    score_pair_items,
    score_prefix_items,
)

__all__ = [
    "AgreementGrammar",
    "AgreementReport",
    "AgreementSentence",
    "PairItem",
    "PrefixItem",
    "format_report",
    "from_generated",
    "read_gulordava",
    "read_linzen",
    "read_marvin_linzen",
    "score_pair_items",
    "score_prefix_items",
]
