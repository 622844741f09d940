"""Agreement test items, and readers for the public formats.

Two kinds of item:

- PrefixItem: a sentence prefix up to the verb; the model must prefer the correct verb form(s)
  over the wrong one(s) as the next word. Used by the generator, Linzen et al. 2016 and
  Gulordava et al. 2018.
- PairItem: a grammatical and an ungrammatical sentence; the model must give the grammatical
  one the higher total log-probability. Used by Marvin & Linzen 2018.

Formats read (tokens are split on whitespace; nothing is lowercased unless `lowercase=True`):

- Linzen et al. 2016, simplified number prediction (`numpred.*`): one item per line,
  `VBZ<TAB>prefix` (singular verb) or `VBP<TAB>prefix` (plural). The verb itself is not in the
  file, so the candidates are the (singular, plural) pairs of LINZEN_VERB_PAIRS that the model
  knows: the item is right when the summed probability of the correct-number forms is higher.
  A file named `*.test.K` holds items with exactly K attractors; the distance is not given.
- Gulordava et al. 2018 (colorlessgreenRNNs `data/agreement/<lang>/generated.*`): `NAME.text`
  (one tokenised sentence per line), `NAME.eval` (the 0-based index of the target verb in the
  same line), `NAME.gold` (TSV, same line order). Gold rows of the released files have 12
  columns: pattern, construction id, sentence id, target index, POS, morphology, correct form,
  wrong form, lemma, subject (controller) index, controller POS, original prefix; the distance
  is target - controller - 1. The attractor count comes from a 4th column of a short gold row
  `index<TAB>correct<TAB>wrong<TAB>n_attr`, or, for the 12-column rows, from `NAME.tab` (its
  `n_attr` column) when that file is next to the others. The released files mix each original
  sentence with its nonce ("generated") versions, which the paper reports apart: meta["type"]
  is "original" or "nonce", from the `.tab`'s `type` column, else from the gold row (an
  original's own prefix is the gold row's last column, the original prefix).
- Marvin & Linzen 2018: JSON `{category: [[grammatical, ungrammatical], ...]}` (the structure of
  their released pickle; the NPI tests hold triples [grammatical, intrusive, ungrammatical], read
  as the paper scores them: three PairItems, grammatical vs intrusive, grammatical vs
  ungrammatical, intrusive vs ungrammatical, each with its `contrast` in meta), or TSV lines
  `category<TAB>grammatical<TAB>ungrammatical` or `grammatical<TAB>ungrammatical`. Their pickle
  is read only with allow_pickle=True, because unpickling runs code from the file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Common present-tense verbs, (VBZ, VBP): the candidate sets for the Linzen format.
LINZEN_VERB_PAIRS: tuple[tuple[str, str], ...] = (
    ("is", "are"),
    ("was", "were"),
    ("has", "have"),
    ("does", "do"),
    ("says", "say"),
    ("makes", "make"),
    ("takes", "take"),
    ("goes", "go"),
    ("gets", "get"),
    ("seems", "seem"),
    ("comes", "come"),
    ("includes", "include"),
    ("remains", "remain"),
    ("means", "mean"),
    ("appears", "appear"),
    ("needs", "need"),
    ("uses", "use"),
    ("gives", "give"),
    ("shows", "show"),
    ("provides", "provide"),
    ("requires", "require"),
    ("contains", "contain"),
    ("becomes", "become"),
    ("lives", "live"),
    ("plays", "play"),
    ("believes", "believe"),
    ("consists", "consist"),
    ("continues", "continue"),
    ("tends", "tend"),
    ("wants", "want"),
)


@dataclass
class PrefixItem:
    prefix: list[str]
    correct: list[str]  # correct next-word form(s)
    wrong: list[str]  # wrong form(s)
    distance: int | None = None  # words between subject and verb, when known
    attractors: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class PairItem:
    good: list[str]
    bad: list[str]
    category: str = ""
    meta: dict = field(default_factory=dict)


class FormatError(ValueError):
    """An input file does not follow the format it was read as."""


def _fail(path, lineno: int, what: str, line: str) -> FormatError:
    return FormatError(f"{path}, line {lineno}: {what}; the line was {line[:120]!r}")


def from_generated(sentences) -> list[PrefixItem]:
    """PrefixItems from AgreementGrammar sentences."""
    return [
        PrefixItem(
            prefix=s.prefix,
            correct=[s.correct_verb],
            wrong=[s.wrong_verb],
            distance=s.distance,
            attractors=s.attractors,
            meta={"plural": s.plural, "modifiers": s.modifiers},
        )
        for s in sentences
    ]


def read_linzen(
    path: str | Path, lowercase: bool = False, verb_pairs=LINZEN_VERB_PAIRS
) -> list[PrefixItem]:
    """Linzen et al. 2016 simplified `VBZ|VBP<TAB>prefix` file."""
    path = Path(path)
    m = re.search(r"\.test\.(\d+)$", path.name)
    attractors = int(m.group(1)) if m else None
    sg = [s for s, _ in verb_pairs]
    pl = [p for _, p in verb_pairs]
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            tag, sep, prefix = line.partition("\t")
            if not sep or tag not in ("VBZ", "VBP"):
                raise _fail(path, lineno, "expected 'VBZ' or 'VBP', a tab, then the prefix", line)
            words = prefix.lower().split() if lowercase else prefix.split()
            if not words:
                raise _fail(path, lineno, "empty prefix", line)
            singular = tag == "VBZ"
            items.append(
                PrefixItem(
                    prefix=words,
                    correct=sg if singular else pl,
                    wrong=pl if singular else sg,
                    attractors=attractors,
                    meta={"plural": not singular, "line": lineno},
                )
            )
    return items


def _read_tab(tab: Path) -> dict[tuple, tuple[int | None, str | None]]:
    """(pattern, construction id, sentence id, correct form) -> (n_attr, type) from a .tab file;
    type "original" or "nonce" (their "generated")."""
    out: dict[tuple, tuple[int | None, str | None]] = {}
    with open(tab, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row.get("class") == "correct":
                key = (row["pattern"], row["constr_id"], row["sent_id"], row["form"])
                kind = {"original": "original", "generated": "nonce"}.get(row.get("type") or "")
                n_attr = row.get("n_attr")
                out[key] = (int(n_attr) if n_attr not in (None, "") else None, kind)
    return out


def read_gulordava(stem: str | Path, lowercase: bool = False) -> list[PrefixItem]:
    """Gulordava et al. 2018: STEM.text, STEM.eval, STEM.gold (and STEM.tab if present)."""
    stem = Path(stem)
    if stem.suffix in (".text", ".eval", ".gold", ".tab"):
        stem = stem.with_suffix("")
    files = {ext: stem.with_name(stem.name + ext) for ext in (".text", ".eval", ".gold")}
    for ext, p in files.items():
        if not p.is_file():
            raise FileNotFoundError(
                f"Gulordava format needs {p} (the {ext} file next to the "
                f"others); pass the common stem, e.g. data/generated"
            )
    texts = files[".text"].read_text(encoding="utf-8").splitlines()
    evals = files[".eval"].read_text(encoding="utf-8").splitlines()
    golds = files[".gold"].read_text(encoding="utf-8").splitlines()
    if not len(texts) == len(evals) == len(golds):
        raise FormatError(
            f"{stem}: .text has {len(texts)} lines, .eval {len(evals)}, .gold "
            f"{len(golds)}; they must be line-aligned (one item per line)"
        )
    tab = stem.with_name(stem.name + ".tab")
    tab_rows = _read_tab(tab) if tab.is_file() else {}
    items = []
    for lineno, (text, ev, gold) in enumerate(zip(texts, evals, golds), 1):
        words = text.lower().split() if lowercase else text.split()
        try:
            target = int(ev.split()[0])
        except (ValueError, IndexError):
            raise _fail(files[".eval"], lineno, "expected the target word's index", ev) from None
        if not 0 <= target < len(words):
            raise _fail(
                files[".eval"],
                lineno,
                f"target index {target} is outside the sentence of {len(words)} words",
                ev,
            )
        cols = gold.split("\t")
        distance = attractors = kind = None
        pattern = ""
        if len(cols) >= 10:
            correct, wrong = cols[6], cols[7]
            if not cols[9].strip().isdigit():
                raise _fail(files[".gold"], lineno, "column 10 should be the subject's index", gold)
            distance = target - int(cols[9]) - 1
            pattern = "__".join(cols[0].split("!")[:2])
            attractors, kind = tab_rows.get((pattern, cols[1], cols[2], correct), (None, None))
            if kind is None and len(cols) >= 12:  # an original sentence's prefix is column 12
                own = " ".join(text.split()[: target + 1])
                kind = "original" if own == cols[11].strip() else "nonce"
        elif len(cols) in (3, 4) and cols[0].strip().lstrip("-").isdigit():
            if int(cols[0]) != target:
                raise _fail(
                    files[".gold"],
                    lineno,
                    f"index {cols[0]} differs from the .eval file's target index {target}",
                    gold,
                )
            correct, wrong = cols[1], cols[2]
            attractors = int(cols[3]) if len(cols) == 4 else None
        elif len(cols) in (2, 3):
            correct, wrong = cols[0], cols[1]
            attractors = int(cols[2]) if len(cols) == 3 else None
        else:
            raise _fail(
                files[".gold"],
                lineno,
                "expected 12 tab-separated columns (released "
                "files) or index, correct, wrong[, n_attr]",
                gold,
            )
        if lowercase:
            correct, wrong = correct.lower(), wrong.lower()
        items.append(
            PrefixItem(
                prefix=words[:target],
                correct=[correct],
                wrong=[wrong],
                distance=distance,
                attractors=attractors,
                meta={
                    "line": lineno,
                    "sentence_target": words[target],
                    "category": pattern,
                    "type": kind,
                },
            )
        )
    return items


def read_marvin_linzen(
    path: str | Path, lowercase: bool = True, allow_pickle: bool = False
) -> list[PairItem]:
    """Marvin & Linzen 2018 minimal pairs (JSON, TSV, or their pickle with allow_pickle)."""
    path = Path(path)

    def split(s: str) -> list[str]:
        return s.lower().split() if lowercase else s.split()

    if path.suffix == ".pickle" or path.suffix == ".pkl":
        if not allow_pickle:
            raise FormatError(
                f"{path} is a pickle, and loading a pickle runs code from the "
                f"file. If you trust it, pass allow_pickle=True (CLI: "
                f"--allow-pickle), or convert it to JSON once"
            )
        import pickle

        with open(path, "rb") as f:
            data = pickle.load(f)  # noqa: S301 - explicitly allowed by the caller
        return _pairs_from_mapping(data, split, path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError(f"{path} is not valid JSON ({e})") from e
        return _pairs_from_mapping(data, split, path)
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) == 3:
            cat, good, bad = cols
        elif len(cols) == 2:
            cat, (good, bad) = "", cols
        else:
            raise _fail(path, lineno, "expected [category<TAB>]grammatical<TAB>ungrammatical", line)
        items.append(
            PairItem(good=split(good), bad=split(bad), category=cat, meta={"line": lineno})
        )
    return items


def _pairs_from_mapping(data, split, path) -> list[PairItem]:
    if not isinstance(data, dict):
        raise FormatError(
            f"{path}: expected a mapping of category -> list of "
            f"[grammatical, ungrammatical] pairs, got {type(data).__name__}"
        )
    items = []
    for cat, pairs in data.items():
        if not isinstance(pairs, list):
            raise FormatError(f"{path}: category {cat!r} should hold a list of pairs")
        for k, pair in enumerate(pairs):
            if (
                not isinstance(pair, list)
                or len(pair) not in (2, 3)
                or not all(isinstance(s, str) for s in pair)
            ):
                raise FormatError(
                    f"{path}: category {cat!r}, item {k} is {str(pair)[:80]}; expected "
                    f"[grammatical, ungrammatical] or, for NPIs, [grammatical, intrusive, "
                    f"ungrammatical] sentences"
                )
            if len(pair) == 2:
                contrasts = [(None, 0, 1)]
            else:
                contrasts = [(name, a, b) for name, (a, b) in NPI_CONTRASTS.items()]
            for contrast, a, b in contrasts:
                meta = {"index": k} if contrast is None else {"index": k, "contrast": contrast}
                items.append(
                    PairItem(good=split(pair[a]), bad=split(pair[b]), category=str(cat), meta=meta)
                )
    return items


# Marvin & Linzen's NPI triples [grammatical, intrusive, ungrammatical], compared as the paper does
NPI_CONTRASTS = {
    "grammatical vs intrusive": (0, 1),
    "grammatical vs ungrammatical": (0, 2),
    "intrusive vs ungrammatical": (1, 2),
}


def write_generated(sentences, path: str | Path) -> Path:
    """Generated sentences as JSON lines (every field of AgreementSentence, plus distance)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            f.write(json.dumps(s.to_dict()) + "\n")
    return path


def read_generated(path: str | Path):
    """The JSON lines written by write_generated, back as AgreementSentence objects."""
    from lstmkit.agreement.grammar import AgreementSentence

    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                d.pop("distance", None)
                out.append(AgreementSentence(**d))
            except (json.JSONDecodeError, TypeError) as e:
                raise _fail(path, lineno, f"not a generated-sentence JSON line ({e})", line) from e
    return out
