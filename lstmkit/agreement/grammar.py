"""A generator of English-like sentences where the subject's number must reach its verb.

    gen = AgreementGrammar(seed=0)
    s = gen.sentence(distance=7, attractors=1, plural=True)
    " ".join(s.tokens)   # 'the cats near the dog that the boys saw are happy .'

A sentence is: subject NP, then modifiers, then an optional adverb filler, then the main verb
(which agrees with the subject), then a short continuation and a full stop. Modifiers:

    PP               near the dog            (3 words, 1 noun)
    PP + adjective   near the old dog        (4 words, 1 noun)
    subject RC       that saw the dog        (4 words, 1 noun)
    object RC        that the dog saw        (4 words, 1 noun)

Embedded verbs are in the past tense, so they carry no number: the only cues to the main verb's
number are the subject noun and the nouns in the modifiers. A modifier noun whose number differs
from the subject's is an *attractor*. `distance` is the number of words between the subject noun
and the verb (0 when they are adjacent); any distance >= 0 can be generated: modifiers of 3 and
4 words plus a 0-2 word adverb filler ("surely", "surely also") fill it exactly.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

NOUNS: tuple[tuple[str, str], ...] = (
    ("cat", "cats"),
    ("dog", "dogs"),
    ("boy", "boys"),
    ("girl", "girls"),
    ("teacher", "teachers"),
    ("farmer", "farmers"),
    ("doctor", "doctors"),
    ("king", "kings"),
    ("bird", "birds"),
    ("horse", "horses"),
    ("child", "children"),
    ("man", "men"),
    ("woman", "women"),
    ("student", "students"),
    ("pilot", "pilots"),
    ("author", "authors"),
)
PREPOSITIONS = ("near", "behind", "beside", "with")
EMBEDDED_VERBS = ("saw", "liked", "chased", "met", "helped", "followed", "admired", "knew")
ADJECTIVES = ("happy", "tired", "old", "small", "hungry", "brave", "quiet", "young")
ADVERBS = ("surely", "really", "probably", "also")
# (singular, plural) main verbs and what may follow them
VERBS: tuple[tuple[str, str, str], ...] = (
    ("is", "are", "adj"),
    ("was", "were", "adj"),
    ("has", "have", "np"),
    ("likes", "like", "np"),
    ("sleeps", "sleep", "adv"),
    ("runs", "run", "adv"),
)
ENDINGS = ("here", "there", "often", "today")
MODIFIERS = ("pp", "pp_adj", "subj_rc", "obj_rc")
MOD_LENGTH = {"pp": 3, "pp_adj": 4, "subj_rc": 4, "obj_rc": 4}


@dataclass
class AgreementSentence:
    tokens: list[str]
    subject_index: int  # position of the subject noun
    verb_index: int  # position of the agreeing verb
    plural: bool  # the subject's number
    wrong_verb: str  # the verb form of the other number
    attractors: int  # modifier nouns whose number differs from the subject's
    modifiers: list[str] = field(default_factory=list)  # kinds, in order
    noun_positions: list[int] = field(default_factory=list)  # every noun, subject first

    @property
    def distance(self) -> int:
        """Words between the subject noun and the verb."""
        return self.verb_index - self.subject_index - 1

    @property
    def correct_verb(self) -> str:
        return self.tokens[self.verb_index]

    @property
    def prefix(self) -> list[str]:
        return self.tokens[: self.verb_index]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["distance"] = self.distance
        return d


def split_distance(distance: int, rng: random.Random) -> tuple[list[int], int]:
    """Modifier lengths (3 or 4 each) and a 0-2 word filler adding up to `distance`."""
    if distance < 0:
        raise ValueError(f"distance is a number of words, so it must be >= 0, got {distance}")
    options = []
    for n in range(distance // 3 + 1):  # n modifiers
        for n4 in range(n + 1):  # of which n4 have 4 words
            rest = distance - 3 * n - n4
            if 0 <= rest <= 2:
                options.append((n, n4, rest))
    n, n4, filler = rng.choice(options)
    lengths = [4] * n4 + [3] * (n - n4)
    rng.shuffle(lengths)
    return lengths, filler


class AgreementGrammar:
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def vocabulary(self) -> list[str]:
        """Every word the grammar can produce (a closed vocabulary)."""
        words = ["the", "a", "that", "."]
        words += [w for pair in NOUNS for w in pair] + list(PREPOSITIONS) + list(EMBEDDED_VERBS)
        words += list(ADJECTIVES) + list(ADVERBS) + [w for v in VERBS for w in v[:2]]
        words += list(ENDINGS)
        return list(dict.fromkeys(words))

    def _noun(self, plural: bool) -> str:
        return self.rng.choice(NOUNS)[1 if plural else 0]

    def _modifier(self, kind: str, plural: bool) -> tuple[list[str], int]:
        """Words of one modifier and the offset of its noun."""
        r, noun = self.rng, self._noun(plural)
        if kind == "pp":
            return [r.choice(PREPOSITIONS), "the", noun], 2
        if kind == "pp_adj":
            return [r.choice(PREPOSITIONS), "the", r.choice(ADJECTIVES), noun], 3
        if kind == "subj_rc":
            return ["that", r.choice(EMBEDDED_VERBS), "the", noun], 3
        if kind == "obj_rc":
            return ["that", "the", noun, r.choice(EMBEDDED_VERBS)], 2
        raise ValueError(f"unknown modifier {kind!r}; expected one of {MODIFIERS}")

    def sentence(
        self, distance: int, attractors: int | None = None, plural: bool | None = None
    ) -> AgreementSentence:
        """One sentence with exactly `distance` words between subject and verb. `attractors`:
        how many modifier nouns take the other number (None: each one at random)."""
        r = self.rng
        plural = r.random() < 0.5 if plural is None else plural
        lengths, filler = split_distance(distance, r)
        n_mod = len(lengths)
        if attractors is not None and not 0 <= attractors <= n_mod:
            raise ValueError(
                f"{attractors} attractors need as many modifiers, but distance {distance} was "
                f"split into {n_mod}; use a longer distance or fewer attractors"
            )
        if attractors is None:
            flips = [r.random() < 0.5 for _ in range(n_mod)]
        else:
            flips = [True] * attractors + [False] * (n_mod - attractors)
            r.shuffle(flips)
        tokens = ["the"]
        if r.random() < 0.3:
            tokens.append(r.choice(ADJECTIVES))
        subject_index = len(tokens)
        tokens.append(self._noun(plural))
        nouns, kinds = [subject_index], []
        for length, flip in zip(lengths, flips):
            kind = "pp" if length == 3 else r.choice(("pp_adj", "subj_rc", "obj_rc"))
            words, offset = self._modifier(kind, plural != flip)
            nouns.append(len(tokens) + offset)
            kinds.append(kind)
            tokens += words
        tokens += r.sample(ADVERBS, filler)
        sg, pl, follow = r.choice(VERBS)
        verb_index = len(tokens)
        tokens.append(pl if plural else sg)
        if follow == "adj":
            tokens.append(r.choice(ADJECTIVES))
        elif follow == "np":
            tokens += ["the", self._noun(r.random() < 0.5)]
        else:
            tokens.append(r.choice(ENDINGS))
        tokens.append(".")
        return AgreementSentence(
            tokens=tokens,
            subject_index=subject_index,
            verb_index=verb_index,
            plural=plural,
            wrong_verb=sg if plural else pl,
            attractors=sum(flips),
            modifiers=kinds,
            noun_positions=nouns,
        )

    def corpus(self, n: int, max_distance: int, min_distance: int = 0) -> list[AgreementSentence]:
        """n sentences, distances uniform in [min_distance, max_distance], attractors random."""
        return [self.sentence(self.rng.randint(min_distance, max_distance)) for _ in range(n)]

    def test_set(self, per_cell: int, distances: list[int]) -> list[AgreementSentence]:
        """`per_cell` sentences for every distance, half singular, attractors random."""
        out = []
        for d in distances:
            for k in range(per_cell):
                out.append(self.sentence(d, plural=k % 2 == 1))
        return out
