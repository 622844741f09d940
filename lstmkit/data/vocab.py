"""Vocab: the mapping between tokens (words or characters) and integer ids.

    vocab = Vocab.build(tokens, min_count=2, max_size=10000)   # specials first: <unk>, <eos>
    ids = vocab.encode(["i", "drank", "apple"])               # unknown tokens -> vocab.unk_id
    vocab.decode(ids)                                         # -> list of tokens

Ids are assigned by descending count, ties broken by first appearance in the text, so the same
text always gives the same vocabulary. Specials always come first, whatever their counts.
Serialised as JSON (to_json / from_json): no pickle, so loading one never runs code.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

UNK = "<unk>"
EOS = "<eos>"
_MISSING = object()


def _show(token: object) -> str:
    """repr(token), cut short: an error message must stay readable whatever the file holds."""
    text = repr(token)
    return text if len(text) <= 40 else text[:37] + "..."


class Vocab:
    def __init__(self, itos: Sequence[str], unk_token: str | None = UNK) -> None:
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {}
        for i, tok in enumerate(self.itos):
            if not isinstance(tok, str):
                raise TypeError(f"vocabulary entry {i} is {type(tok).__name__}, expected str")
            if tok in self.stoi:
                raise ValueError(
                    f"token {_show(tok)} appears twice in the vocabulary (ids "
                    f"{self.stoi[tok]} and {i}); each token needs exactly one id"
                )
            self.stoi[tok] = i
        if unk_token is not None and unk_token not in self.stoi:
            raise ValueError(
                f"unknown token {_show(unk_token)} is not in the vocabulary; add it "
                f"(Vocab.build puts it first) or pass unk_token=None"
            )
        self.unk_token = unk_token

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        token_iter: Iterable[str],
        min_count: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (UNK, EOS),
    ) -> Vocab:
        """Count tokens; keep those seen at least `min_count` times, the most frequent first, at
        most `max_size` entries in all (specials included). specials[0] is the unknown token when
        it is "<unk>" (or any specials[0] if "<unk>" is absent); specials=() means no unknown
        token, so encode() of an unseen token is an error (use this for character models that
        must see every character)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        specials = list(dict.fromkeys(specials))  # keep order, drop duplicates
        if max_size is not None and max_size < len(specials):
            raise ValueError(
                f"max_size={max_size} leaves no room for the {len(specials)} "
                f"special tokens {specials}; use max_size >= {len(specials)}"
            )
        counts = Counter(token_iter)  # Counter keeps first-appearance order for ties
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: ties keep text order
        itos = list(specials)
        for tok, n in ranked:
            if n < min_count or (max_size is not None and len(itos) >= max_size):
                break
            if tok not in specials:
                itos.append(tok)
        unk = UNK if UNK in specials else (specials[0] if specials else None)
        return cls(itos, unk_token=unk)

    # ---- lookups ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.itos == other.itos
            and self.unk_token == other.unk_token
        )

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.itos[:5])
        return f"Vocab({len(self)} tokens: {head}{', ...' if len(self) > 5 else ''})"

    @property
    def unk_id(self) -> int | None:
        return None if self.unk_token is None else self.stoi[self.unk_token]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; tokens not in the vocabulary map to the unknown token's id."""
        stoi, unk = self.stoi, self.unk_id
        if unk is not None:
            return [stoi.get(t, unk) for t in tokens]
        out = []
        for pos, t in enumerate(tokens):
            if t not in stoi:
                raise KeyError(
                    f"token {t!r} (position {pos}) is not in the vocabulary, which "
                    f"has no unknown token; rebuild it on text that contains it"
                )
            out.append(stoi[t])
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        n = len(self.itos)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise IndexError(f"id {i} is outside the vocabulary (0..{n - 1})")
            out.append(self.itos[i])
        return out

    # ---- serialisation ---------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {"format": "lstmkit.vocab/1", "unk_token": self.unk_token, "itos": self.itos},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"vocabulary is not valid JSON ({e}); the file is damaged") from e
        if not isinstance(data, dict) or data.get("format") != "lstmkit.vocab/1":
            raise ValueError(
                "not an lstmkit vocabulary: expected a JSON object with "
                "format 'lstmkit.vocab/1', 'unk_token' and 'itos'"
            )
        itos, unk = data.get("itos"), data.get("unk_token", _MISSING)
        if not isinstance(itos, list):
            raise ValueError(
                "the vocabulary's 'itos' must be a list of token strings (id -> token), it is "
                + ("missing" if "itos" not in data else type(itos).__name__)
            )
        bad = next((i for i, t in enumerate(itos) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(
                f"vocabulary entry {bad} is {type(itos[bad]).__name__} {_show(itos[bad])}; every "
                f"token must be a string"
            )
        if unk is _MISSING or not (unk is None or isinstance(unk, str)):
            raise ValueError(
                "the vocabulary's 'unk_token' must be a token string or null (no unknown "
                "token), it is " + ("missing" if unk is _MISSING else type(unk).__name__)
            )
        return cls(itos, unk_token=unk)

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path) -> Vocab:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())
