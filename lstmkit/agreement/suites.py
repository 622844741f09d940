"""Whole public test suites scored in one call, with the table their paper prints.

    rows = score_marvin_linzen(model, vocab, "../shared/data/marvin_linzen_2018")
    print(format_suite_table(rows))

Marvin & Linzen 2018 ("Targeted Syntactic Evaluation of Language Models") released one file per
test: 22 files, merged here into the 16 rows of their results table (the animate / inanimate
variants of a test are one row, as in the paper). A row's accuracy is over its scorable pairs
(lstmkit.agreement.score: a pair the vocabulary cannot tell apart is unscorable, not wrong), and
the NPI rows are split by contrast (grammatical vs intrusive, grammatical vs ungrammatical,
intrusive vs ungrammatical), as the paper scores them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from lstmkit.agreement.readers import FormatError, read_marvin_linzen
from lstmkit.agreement.score import score_pair_items

# (section, row of the paper's table) -> the test files that make the row
MARVIN_LINZEN_ROWS: dict[tuple[str, str], tuple[str, ...]] = {
    ("agreement", "simple"): ("simple_agrmt",),
    ("agreement", "in a sentential complement"): ("sent_comp",),
    ("agreement", "short VP coordination"): ("vp_coord",),
    ("agreement", "long VP coordination"): ("long_vp_coord",),
    ("agreement", "across a prepositional phrase"): ("prep_anim", "prep_inanim"),
    ("agreement", "across a subject relative clause"): ("subj_rel",),
    ("agreement", "across an object relative clause"): (
        "obj_rel_across_anim",
        "obj_rel_across_inanim",
    ),
    ("agreement", "across an object relative (no that)"): (
        "obj_rel_no_comp_across_anim",
        "obj_rel_no_comp_across_inanim",
    ),
    ("agreement", "in an object relative clause"): ("obj_rel_within_anim", "obj_rel_within_inanim"),
    ("agreement", "in an object relative (no that)"): (
        "obj_rel_no_comp_within_anim",
        "obj_rel_no_comp_within_inanim",
    ),
    ("reflexives", "simple"): ("simple_reflexives",),
    ("reflexives", "in a sentential complement"): ("reflexive_sent_comp",),
    ("reflexives", "across a relative clause"): ("reflexives_across",),
    ("NPI", "simple"): ("simple_npi_anim", "simple_npi_inanim"),
    ("NPI", "across a relative clause"): ("npi_across_anim", "npi_across_inanim"),
}


@dataclass
class SuiteRow:
    section: str
    phenomenon: str
    contrast: str | None  # NPI rows: which two sentences of the triple
    n: int  # scorable pairs
    accuracy: float
    unscorable: int
    files: list[str]

    @property
    def unscorable_share(self) -> float:
        total = self.n + self.unscorable
        return self.unscorable / total if total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "unscorable_share": self.unscorable_share}


def _thin(items: list, per_test: int | None) -> list:
    """At most per_test entries of a file, spread evenly over it (its conditions come in blocks,
    so the first N would test one condition only). An NPI triple is one entry: its three
    contrasts stay together."""
    entries: dict[tuple, list] = {}
    for item in items:
        entries.setdefault((item.category, item.meta.get("index")), []).append(item)
    groups = list(entries.values())
    if per_test is not None and len(groups) > per_test:
        step = len(groups) / per_test
        groups = [groups[int(k * step)] for k in range(per_test)]
    return [item for group in groups for item in group]


def score_marvin_linzen(
    model,
    vocab,
    folder: str | Path,
    *,
    per_test: int | None = None,
    bos: str | None = "<eos>",
    lowercase: bool = True,
    progress=None,
) -> list[SuiteRow]:
    """Score every test of a Marvin & Linzen folder (their JSON files, see
    ../shared/data/marvin_linzen_2018/SOURCE.txt); one SuiteRow per row (and NPI contrast) of
    the paper's table. `per_test` caps the pairs read from each file (spread over the file);
    `progress(name)` is called before each file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is not a folder; pass the folder of Marvin & Linzen's test files "
            f"(e.g. ../shared/data/marvin_linzen_2018)"
        )
    missing = [s for stems in MARVIN_LINZEN_ROWS.values() for s in stems]
    missing = [s for s in missing if not (folder / f"{s}.json").is_file()]
    if len(missing) == sum(len(v) for v in MARVIN_LINZEN_ROWS.values()):
        raise FormatError(
            f"{folder} holds none of Marvin & Linzen's test files (simple_agrmt.json, "
            f"sent_comp.json, ...); is it the right folder?"
        )
    rows = []
    for (section, phenomenon), stems in MARVIN_LINZEN_ROWS.items():
        present = [s for s in stems if s not in missing]
        if not present:
            continue
        items = []
        for stem in present:
            if progress is not None:
                progress(stem)
            read = read_marvin_linzen(folder / f"{stem}.json", lowercase=lowercase)
            items += _thin(read, per_test)
        report = score_pair_items(model, vocab, items, bos=bos)
        by_contrast = report.by_contrast or {None: None}
        for contrast, cell in by_contrast.items():
            if cell is None:  # no contrasts: the row's own totals
                cell = {"n": report.n, "accuracy": report.accuracy, "unscorable": report.unscorable}
            rows.append(
                SuiteRow(
                    section,
                    phenomenon,
                    contrast,
                    cell["n"],
                    cell["accuracy"],
                    cell["unscorable"],
                    present,
                )  # fmt: skip
            )
    return rows


def format_suite_table(rows: list[SuiteRow], title: str = "") -> str:
    """The paper's table: section, phenomenon (and contrast), accuracy over scorable pairs, n,
    and the unscorable count and share."""
    lines = [title] if title else []
    head = f"{'':11}{'phenomenon':58}{'accuracy':>9}{'n':>8}{'unscorable':>16}"
    lines += [head, "-" * len(head)]
    for r in rows:
        name = r.phenomenon + (f" ({r.contrast})" if r.contrast else "")
        acc = "-" if r.n == 0 else f"{r.accuracy:.3f}"
        unscorable = f"{r.unscorable} ({100 * r.unscorable_share:.0f}%)"
        lines.append(f"{r.section:11}{name:58}{acc:>9}{r.n:>8}{unscorable:>16}")
    return "\n".join(lines)
