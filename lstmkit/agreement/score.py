"""Scoring any language model on agreement items.

    report = score_prefix_items(model, vocab, items)      # PrefixItem: next-word comparison
    report = score_pair_items(model, vocab, pairs)        # PairItem: whole-sentence log-prob
    report.accuracy, report.by_distance, report.by_attractors, report.oov_share

`model` is anything with the lstmkit LanguageModel contract: model(tokens (T, B) int64) ->
(logits (T, B, V), hidden). `vocab` maps tokens to ids (lstmkit.data.Vocab). Every sequence
starts with `bos` (default "<eos>", the sentence separator LMs trained on PTB-style streams
see before each sentence) when the vocabulary has it, so the first word is predicted too.

A PrefixItem is right when log P(correct forms | prefix) > log P(wrong forms | prefix), where a
set of forms scores the log of its summed probability. Forms the vocabulary lacks are dropped
(pairwise when both lists have the same length, as for Linzen's verb pairs). A PairItem is right
when the grammatical sentence's summed log-probability is higher. Ties count as wrong.

An item the model cannot be asked about is *unscorable*, never wrong: a PrefixItem with no known
form on one side, a PairItem whose two sentences are the same ids once out-of-vocabulary words
become <unk> (Marvin & Linzen's "the author laughs / laugh" with a PTB vocabulary, where
"laughs" and "laugh" are both <unk>). Accuracy is over the scorable items; the report gives the
unscorable count and share beside it, and every breakdown counts its own.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lstmkit.agreement.readers import PairItem, PrefixItem


@dataclass
class AgreementReport:
    n: int  # items scored
    correct: int
    unscorable: int  # items the vocabulary cannot tell apart (see the module docstring)
    oov_tokens: int  # context tokens not in the vocabulary (mapped to <unk>)
    total_tokens: int
    by_distance: dict[int, dict] = field(default_factory=dict)  # {d: {"n", "accuracy"}}
    by_attractors: dict[int, dict] = field(default_factory=dict)
    by_category: dict[str, dict] = field(default_factory=dict)
    by_number: dict[str, dict] = field(default_factory=dict)  # subject singular / plural
    by_type: dict[str, dict] = field(default_factory=dict)  # Gulordava: original / nonce
    by_contrast: dict[str, dict] = field(default_factory=dict)  # M&L NPI: which two sentences
    results: list[dict] = field(default_factory=list)  # per item: correct, margin, ...

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def majority_baseline(self) -> float | None:
        """Accuracy of always answering the more frequent subject number (None if unknown)."""
        counts = [v["n"] for v in self.by_number.values()]
        return max(counts) / sum(counts) if counts else None

    @property
    def unscorable_share(self) -> float:
        total = self.n + self.unscorable
        return self.unscorable / total if total else 0.0

    @property
    def oov_share(self) -> float:
        return self.oov_tokens / self.total_tokens if self.total_tokens else 0.0

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "unscorable": self.unscorable,
            "unscorable_share": self.unscorable_share,
            "oov_tokens": self.oov_tokens,
            "total_tokens": self.total_tokens,
            "oov_share": self.oov_share,
            "by_distance": {str(k): v for k, v in self.by_distance.items()},
            "by_attractors": {str(k): v for k, v in self.by_attractors.items()},
            "by_category": self.by_category,
            "by_number": self.by_number,
            "by_type": self.by_type,
            "by_contrast": self.by_contrast,
            "majority_baseline": self.majority_baseline,
        }


def _breakdown(results: list[dict], key: str) -> dict:
    """{value: {"n", "accuracy", "unscorable"}}; n and accuracy over the scorable items."""
    groups: dict = defaultdict(list)
    for r in results:
        if r.get(key) is not None and r.get(key) != "":
            groups[r[key]].append(r)
    table = {}
    for k, rs in sorted(groups.items()):
        scored = [r["correct"] for r in rs if r["correct"] is not None]
        table[k] = {
            "n": len(scored),
            "accuracy": sum(scored) / len(scored) if scored else float("nan"),
            "unscorable": len(rs) - len(scored),
        }
    return table


def _report(results: list[dict], oov: int, total: int) -> AgreementReport:
    """results: one dict per item, "correct" None for an unscorable one."""
    scored = [r for r in results if r["correct"] is not None]
    return AgreementReport(
        n=len(scored),
        correct=sum(r["correct"] for r in scored),
        unscorable=len(results) - len(scored),
        oov_tokens=oov,
        total_tokens=total,
        by_distance=_breakdown(results, "distance"),
        by_attractors=_breakdown(results, "attractors"),
        by_category=_breakdown(results, "category"),
        by_number=_breakdown(results, "number"),
        by_type=_breakdown(results, "type"),
        by_contrast=_breakdown(results, "contrast"),
        results=results,
    )


def _unscorable(**fields) -> dict:
    return {"correct": None, "margin": None, **fields}


def _number(plural) -> str | None:
    return None if plural is None else ("plural" if plural else "singular")


def _bos_ids(vocab, bos: str | None) -> list[int]:
    return [vocab.stoi[bos]] if bos is not None and bos in vocab.stoi else []


def _known_forms(correct: list[str], wrong: list[str], vocab) -> tuple[list[int], list[int]]:
    known = vocab.stoi
    if len(correct) == len(wrong):  # aligned pairs (e.g. is/are): keep a pair only if both known
        pairs = [(c, w) for c, w in zip(correct, wrong) if c in known and w in known]
        return [known[c] for c, _ in pairs], [known[w] for _, w in pairs]
    return [known[c] for c in correct if c in known], [known[w] for w in wrong if w in known]


def _padded(seqs: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    """(T, B) ids padded at the end, and (B,) lengths."""
    T = max(len(s) for s in seqs)
    out = torch.full((T, len(seqs)), pad, dtype=torch.long)
    for b, s in enumerate(seqs):
        out[: len(s), b] = torch.tensor(s, dtype=torch.long)
    return out, torch.tensor([len(s) for s in seqs])


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _run(model, tokens: Tensor, intervention):
    """model(tokens), with an intervention only when there is one (any LM contract works)."""
    if intervention is None:
        return model(tokens)[0]
    return model(tokens, intervention=intervention)[0]


@contextmanager
def _evaluating(model):
    """model.eval() for the scoring, then every submodule's own mode back (model.train(mode)
    would give them all the top module's), even when the forward raises."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def next_word_log_probs(
    model, seqs: list[list[int]], batch_size: int = 128, intervention=None
) -> list[Tensor]:
    """For each id sequence, log P(next word | the whole sequence): a (V,) tensor each.
    Sequences are right-padded (which cannot change earlier steps of a left-to-right model).
    `intervention`: an lstmkit.Intervention applied to every batch (e.g. an ablation)."""
    if any(not s for s in seqs):
        raise ValueError("every sequence needs at least one token to predict the next word from")
    dev, out = _device(model), [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    with _evaluating(model):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            tokens, lengths = _padded([seqs[i] for i in idx], pad=0)
            logits = _run(model, tokens.to(dev), intervention)  # (T, B, V)
            last = logits[lengths.to(dev) - 1, torch.arange(len(idx), device=dev)]  # (B, V)
            logp = torch.log_softmax(last.float(), -1).cpu()
            for k, i in enumerate(idx):
                out[i] = logp[k]
    return out


@torch.no_grad()
def sequence_log_probs(
    model, seqs: list[list[int]], n_context: int, batch_size: int = 64, intervention=None
) -> list[float]:
    """Summed log P(w_t | w_<t) over positions t >= n_context of each id sequence."""
    dev, out = _device(model), [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    with _evaluating(model):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            tokens, lengths = _padded([seqs[i] for i in idx], pad=0)
            logits = _run(model, tokens.to(dev), intervention)
            logp = torch.log_softmax(logits.float(), -1).cpu()  # (T, B, V)
            step = logp[:-1].gather(2, tokens[1:].unsqueeze(-1)).squeeze(-1)  # (T-1, B)
            t = torch.arange(step.shape[0])[:, None]  # step t predicts token t + 1
            keep = (t + 1 >= n_context) & (t + 1 < lengths[None, :])
            sums = (step * keep).sum(0)
            for k, i in enumerate(idx):
                out[i] = float(sums[k])
    return out


def score_prefix_items(
    model,
    vocab,
    items: list[PrefixItem],
    bos: str | None = "<eos>",
    batch_size: int = 128,
    intervention=None,
) -> AgreementReport:
    bos_ids = _bos_ids(vocab, bos)
    seqs, keep, oov, total = [], [], 0, 0
    results: list[dict] = []
    for item in items:
        fields = {
            "distance": item.distance,
            "attractors": item.attractors,
            "category": item.meta.get("category", ""),
            "number": _number(item.meta.get("plural")),
            "type": item.meta.get("type"),
        }
        good, bad = _known_forms(item.correct, item.wrong, vocab)
        if not good or not bad or not (bos_ids or item.prefix):
            # the model cannot be asked (no known form, or nothing to predict from)
            results.append(_unscorable(**fields))
            continue
        oov += sum(w not in vocab.stoi for w in item.prefix)
        total += len(item.prefix)
        seqs.append(bos_ids + vocab.encode(item.prefix))
        results.append(fields)
        keep.append((fields, good, bad))
    logps = next_word_log_probs(model, seqs, batch_size, intervention) if seqs else []
    for (fields, good, bad), lp in zip(keep, logps):
        s_good = float(torch.logsumexp(lp[good], 0))
        s_bad = float(torch.logsumexp(lp[bad], 0))
        fields.update(correct=s_good > s_bad, margin=s_good - s_bad)
    return _report(results, oov, total)


def score_pair_items(
    model,
    vocab,
    items: list[PairItem],
    bos: str | None = "<eos>",
    batch_size: int = 64,
    intervention=None,
) -> AgreementReport:
    bos_ids = _bos_ids(vocab, bos)
    n_ctx = max(len(bos_ids), 1)  # without a bos the first word cannot be scored
    seqs, keep, oov, total = [], [], 0, 0
    results: list[dict] = []
    for item in items:
        fields = {"category": item.category, "contrast": item.meta.get("contrast")}
        good, bad = bos_ids + vocab.encode(item.good), bos_ids + vocab.encode(item.bad)
        if good == bad:  # the words that differ are all <unk>: unscorable, not wrong
            results.append(_unscorable(**fields))
            continue
        # counted over scorable items, as for prefix items (an unscorable pair's differing
        # words are out of vocabulary by definition: they would inflate the share)
        oov += sum(w not in vocab.stoi for w in item.good + item.bad)
        total += len(item.good) + len(item.bad)
        seqs += [good, bad]
        results.append(fields)
        keep.append(fields)
    scores = sequence_log_probs(model, seqs, n_ctx, batch_size, intervention) if seqs else []
    for k, fields in enumerate(keep):
        good, bad = scores[2 * k], scores[2 * k + 1]
        fields.update(correct=good > bad, margin=good - bad)
    return _report(results, oov, total)


def format_report(report: AgreementReport, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(
        f"accuracy {report.accuracy:.3f} on {report.n} scorable items; {report.unscorable} "
        f"unscorable ({report.unscorable_share:.1%}: the forms that differ are not in the "
        f"vocabulary); OOV share of words {report.oov_share:.1%}"
    )
    if report.majority_baseline is not None:
        lines.append(
            f"  always answering the more frequent subject number would score "
            f"{report.majority_baseline:.3f}"
        )
    for name, table in (
        ("distance", report.by_distance),
        ("attractors", report.by_attractors),
        ("subject number", report.by_number),
        ("sentence type", report.by_type),
        ("contrast", report.by_contrast),
        ("category", report.by_category),
    ):
        if table:
            lines.append(f"  by {name}:")
            for k, v in table.items():
                extra = f", {v['unscorable']} unscorable" if v["unscorable"] else ""
                lines.append(f"    {str(k):>28}  {v['accuracy']:.3f}  (n={v['n']}{extra})")
    return "\n".join(lines)


def format_comparison(base: AgreementReport, edited: AgreementReport, what: str) -> str:
    """Accuracy without and with an intervention, overall and by distance and attractors."""
    lines = [f"{'':>30}  {'without':>8}  {'with':>8}   ({what})"]
    lines.append(f"{'all':>30}  {base.accuracy:8.3f}  {edited.accuracy:8.3f}   n={base.n}")
    for name, a, b in (
        ("distance", base.by_distance, edited.by_distance),
        ("attractors", base.by_attractors, edited.by_attractors),
        ("category", base.by_category, edited.by_category),
    ):
        for k in a:
            label = f"{name} {k}"
            lines.append(
                f"{label:>30}  {a[k]['accuracy']:8.3f}  {b[k]['accuracy']:8.3f}   n={a[k]['n']}"
            )
    return "\n".join(lines)
