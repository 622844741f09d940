"""The agreement generator, the scorer on hand-made items with known answers, and the readers on
small fixture files written in each public format."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lstmkit.agreement import (
    AgreementGrammar,
    PairItem,
    PrefixItem,
    from_generated,
    read_gulordava,
    read_linzen,
    read_marvin_linzen,
    score_pair_items,
    score_prefix_items,
)
from lstmkit.agreement.grammar import NOUNS
from lstmkit.agreement.readers import FormatError, read_generated, write_generated
from lstmkit.agreement.score import AgreementReport, _device, _padded, format_report
from lstmkit.data.vocab import Vocab

PLURALS = {pl for _, pl in NOUNS}
SINGULARS = {sg for sg, _ in NOUNS}


# ---- the generator ------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", list(range(0, 21)))
def test_generator_hits_every_distance_exactly(distance):
    g = AgreementGrammar(seed=distance)
    for _ in range(20):
        s = g.sentence(distance)
        assert s.distance == distance == s.verb_index - s.subject_index - 1
        subj = s.tokens[s.subject_index]
        assert (subj in PLURALS) == s.plural and (subj in PLURALS | SINGULARS)
        # the attractor count is the number of modifier nouns of the other number
        others = [s.tokens[p] for p in s.noun_positions[1:] if p < s.verb_index]
        assert len(others) == len(s.modifiers)
        assert s.attractors == sum((w in PLURALS) != s.plural for w in others)
        assert s.tokens[-1] == "." and set(s.tokens) <= set(g.vocabulary())


@pytest.mark.parametrize("attractors", [0, 1, 2, 3])
def test_generator_controls_attractors_and_number(attractors):
    g = AgreementGrammar(seed=7)
    for plural in (False, True):
        s = g.sentence(12, attractors=attractors, plural=plural)
        assert s.attractors == attractors and s.plural == plural
        assert s.correct_verb != s.wrong_verb
    with pytest.raises(ValueError, match="attractors need as many modifiers"):
        g.sentence(2, attractors=1)


def test_generator_makes_the_example_structures():
    kinds = set()
    g = AgreementGrammar(seed=1)
    for s in g.corpus(300, 14):
        kinds |= set(s.modifiers)
    assert kinds == {"pp", "pp_adj", "subj_rc", "obj_rc"}


# ---- a language model whose answers are known ---------------------------------------------------
class BigramLM(nn.Module):
    """Logits depend only on the current token: table[current] -> next-token logits."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, tokens, hidden=None, return_trace=False):
        return self.table[tokens], hidden  # (T, B, V)


WORDS = ["<unk>", "<eos>", "the", "cat", "cats", "dog", "dogs", "near", "is", "are", "was", "were"]


@pytest.fixture
def bigram():
    vocab = Vocab(WORDS)
    V, s = len(WORDS), vocab.stoi
    table = torch.zeros(V, V)
    table[s["cat"], s["is"]] = 2.0  # after a singular noun: singular verbs
    table[s["dog"], s["is"]] = 2.0
    table[s["cat"], s["was"]] = 1.0
    table[s["cats"], s["are"]] = 2.0  # after a plural noun: plural verbs
    table[s["dogs"], s["are"]] = 2.0
    table[s["dogs"], s["were"]] = 1.0
    table[s["<eos>"], s["the"]] = 3.0
    return BigramLM(table), vocab


def test_prefix_scorer_on_items_with_known_answers(bigram):
    model, vocab = bigram
    items = [
        PrefixItem(["the", "cat"], ["is"], ["are"], distance=0, attractors=0),  # right
        PrefixItem(["the", "cats"], ["are"], ["is"], distance=0, attractors=0),  # right
        PrefixItem(
            ["the", "cats", "near", "the", "dog"], ["are"], ["is"], distance=3, attractors=1
        ),  # wrong: a bigram model follows the attractor
        PrefixItem(
            ["the", "cat", "near", "the", "dogs"], ["is"], ["are"], distance=3, attractors=1
        ),  # wrong
        PrefixItem(
            ["the", "cat", "near", "the", "dog"], ["is"], ["are"], distance=3, attractors=0
        ),  # right
        PrefixItem(["the", "cat"], ["is"], ["isnt"], distance=0),  # unscorable: OOV form
        PrefixItem(["the", "zebra"], ["is"], ["are"], distance=0),  # unk context: a tie
    ]
    rep = score_prefix_items(model, vocab, items, batch_size=3)
    assert [r["correct"] for r in rep.results] == [True, True, False, False, True, None, False]
    assert rep.n == 6 and rep.correct == 3 and rep.unscorable == 1
    assert rep.unscorable_share == 1 / 7
    assert rep.by_distance == {
        0: {"n": 3, "accuracy": 2 / 3, "unscorable": 1},
        3: {"n": 3, "accuracy": 1 / 3, "unscorable": 0},
    }
    assert rep.by_attractors == {
        0: {"n": 3, "accuracy": 1.0, "unscorable": 0},
        1: {"n": 2, "accuracy": 0.0, "unscorable": 0},
    }
    assert rep.oov_tokens == 1 and rep.total_tokens == 2 + 2 + 5 + 5 + 5 + 2
    assert rep.results[0]["margin"] == pytest.approx(2.0, abs=1e-6)  # log e^2 - log e^0


def test_prefix_scorer_sums_form_sets_and_drops_unknown_pairs(bigram):
    model, vocab = bigram
    # sets: P(is) + P(was) vs P(are) + P(were); the pair ("goes", "go") is unknown and dropped
    item = PrefixItem(["the", "cat"], ["is", "was", "goes"], ["are", "were", "go"])
    rep = score_prefix_items(model, vocab, [item])
    want = math.log(math.exp(2) + math.exp(1)) - math.log(2)
    assert rep.results[0]["margin"] == pytest.approx(want, abs=1e-6)


def test_pair_scorer_matches_hand_computed_log_probabilities(bigram):
    model, vocab = bigram
    table = model.table.detach()
    good, bad = ["the", "dogs", "are"], ["the", "dogs", "is"]

    def logp(words):
        ids = [vocab.stoi["<eos>"]] + vocab.encode(words)
        return sum(float(torch.log_softmax(table[a], 0)[b]) for a, b in zip(ids, ids[1:]))

    rep = score_pair_items(
        model, vocab, [PairItem(good, bad, "simple"), PairItem(bad, good, "flipped")]
    )
    assert [r["correct"] for r in rep.results] == [True, False]
    assert rep.results[0]["margin"] == pytest.approx(logp(good) - logp(bad), abs=1e-5)
    assert rep.by_category == {
        "flipped": {"n": 1, "accuracy": 0.0, "unscorable": 0},
        "simple": {"n": 1, "accuracy": 1.0, "unscorable": 0},
    }


def test_pair_scorer_counts_a_tie_as_wrong(bigram):
    """Two sentences with exactly equal log-probabilities: the pair is not right. After "dog"
    the bigram gives "near" and "were" the same logit 0, and both rows after them are all 0."""
    model, vocab = bigram
    tie = PairItem(["the", "dog", "near"], ["the", "dog", "were"], "tie")
    right = PairItem(["the", "dogs", "are"], ["the", "dogs", "is"], "right")
    wrong = PairItem(["the", "dogs", "is"], ["the", "dogs", "are"], "wrong")
    rep = score_pair_items(model, vocab, [tie, right, wrong])
    assert rep.results[0]["margin"] == 0.0  # an exact tie, not merely a small margin
    assert [r["correct"] for r in rep.results] == [False, True, False]
    assert rep.n == 3 and rep.correct == 1
    assert rep.by_category["tie"] == {"n": 1, "accuracy": 0.0, "unscorable": 0}
    # a model whose every output is the same: every pair of equal-length sentences ties
    flat = BigramLM(torch.zeros(len(WORDS), len(WORDS)))
    rep = score_pair_items(flat, vocab, [right, wrong, tie])
    assert [r["margin"] for r in rep.results] == [0.0, 0.0, 0.0]
    assert rep.correct == 0 and rep.accuracy == 0.0


class TinyRecurrentLM(nn.Module):
    """A recurrent LM (embedding -> LSTM -> linear): every step depends on all earlier tokens, so
    a padded position past a sequence's end gives different logits from its last real token."""

    def __init__(self, vocab_size: int):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab_size, 5).double()
        self.rnn = nn.LSTM(5, 7).double()
        self.out = nn.Linear(7, vocab_size).double()

    def forward(self, tokens, hidden=None, return_trace=False):
        h, hidden = self.rnn(self.emb(tokens), hidden)
        return self.out(h), hidden


MIXED = [  # prefixes of lengths 1 to 6 (2 to 7 with <eos>), deliberately not sorted
    PrefixItem(["the", "cats", "near", "the", "dog"], ["are"], ["is"]),
    PrefixItem(["the"], ["cat"], ["cats"]),
    PrefixItem(["the", "cat", "near", "the", "dogs", "near"], ["the"], ["near"]),
    PrefixItem(["the", "cat"], ["is", "was"], ["are", "were"]),
    PrefixItem(["the", "dogs", "near"], ["the"], ["cat"]),
]


def test_prefix_scorer_uses_each_items_last_token_in_mixed_length_batches(bigram):
    """One batch holding prefixes of different lengths: each item's next-word distribution is
    read at its own last token, so the batched margins equal those of each item run alone."""
    model = TinyRecurrentLM(len(WORDS))
    vocab = bigram[1]
    rep = score_prefix_items(model, vocab, MIXED, batch_size=len(MIXED))
    assert rep.n == len(MIXED) and rep.unscorable == 0
    for item, r in zip(MIXED, rep.results):
        ids = torch.tensor([vocab.stoi["<eos>"]] + [vocab.stoi[w] for w in item.prefix])
        with torch.no_grad():
            logits = model(ids[:, None])[0][-1, 0]  # the item alone: a batch of one
        logp = torch.log_softmax(logits, -1)
        good = torch.logsumexp(logp[[vocab.stoi[w] for w in item.correct]], 0)
        bad = torch.logsumexp(logp[[vocab.stoi[w] for w in item.wrong]], 0)
        assert r["margin"] == pytest.approx(float(good - bad), abs=1e-5)  # scored in float32
        assert r["correct"] == bool(good > bad)
        alone = score_prefix_items(model, vocab, [item]).results[0]
        assert r["margin"] == pytest.approx(alone["margin"], abs=1e-5)
    # the bigram model's answers are known by hand: each margin is read after the item's own
    # last word (a padded position would read the all-zero row of <unk>: margin 0)
    bigram_model = bigram[0]
    items = [
        PrefixItem(["the", "cats", "near", "the", "dogs"], ["are"], ["is"]),  # e^2 vs e^0
        PrefixItem(["the", "cat"], ["is"], ["are"]),  # e^2 vs e^0
        PrefixItem(["the", "dog", "near", "the", "cat"], ["was"], ["were"]),  # e^1 vs e^0
    ]
    rep = score_prefix_items(bigram_model, vocab, items, batch_size=3)
    margins = [r["margin"] for r in rep.results]
    assert margins == pytest.approx([2.0, 2.0, 1.0], abs=1e-6)


def test_pair_scorer_mixed_length_batches_match_each_pair_alone():
    vocab = Vocab(WORDS)
    model = TinyRecurrentLM(len(WORDS))
    pairs = [
        PairItem(["the", "cat", "is"], ["the", "cat", "are"]),
        PairItem(["the", "cats", "near", "the", "dog", "are"], ["the", "cats", "near", "is"]),
        PairItem(["the", "dog"], ["the", "dogs", "near", "the", "cat", "was"]),
    ]
    rep = score_pair_items(model, vocab, pairs, batch_size=6)
    for pair, r in zip(pairs, rep.results):

        def logp(words):
            ids = torch.tensor([vocab.stoi["<eos>"]] + [vocab.stoi[w] for w in words])
            with torch.no_grad():
                lp = torch.log_softmax(model(ids[:, None])[0][:, 0], -1)  # alone
            return float(sum(lp[t, ids[t + 1]] for t in range(len(ids) - 1)))

        assert r["margin"] == pytest.approx(logp(pair.good) - logp(pair.bad), abs=1e-5)


def test_generated_items_round_trip(tmp_path):
    sents = AgreementGrammar(3).test_set(2, [0, 5, 9])
    path = write_generated(sents, tmp_path / "test.jsonl")
    back = read_generated(path)
    assert [s.tokens for s in back] == [s.tokens for s in sents]
    items = from_generated(back)
    assert [i.distance for i in items] == [0, 0, 5, 5, 9, 9]
    assert all(i.correct[0] == s.tokens[s.verb_index] for i, s in zip(items, back))


# ---- readers, on fixture files in each format ---------------------------------------------------
def test_linzen_reader(tmp_path):
    p = tmp_path / "numpred.test.2"
    p.write_text("VBZ\tthe cat near the dogs\nVBP\tThe Cats NN near the dog\n\n")
    items = read_linzen(p, lowercase=True)
    assert len(items) == 2 and all(i.attractors == 2 for i in items)
    assert items[0].correct[0] == "is" and items[0].wrong[0] == "are"
    assert items[1].prefix == ["the", "cats", "nn", "near", "the", "dog"]
    assert items[1].correct[:2] == ["are", "were"]
    assert read_linzen(p)[1].prefix[1] == "Cats"  # no lowercasing unless asked
    bad = tmp_path / "numpred.val"
    bad.write_text("VBX\tthe cat\n")
    with pytest.raises(FormatError, match="line 1: expected 'VBZ' or 'VBP'"):
        read_linzen(bad)


GOLD_12 = (
    "L!NOUN_VERB_VERB!Number=Plur!Number=Sing\t7\t6\t5\tVERB\tNumber=Sing\tis\tare\tbe"
    "\t1\tNOUN\tThe road we travel is\n"
    "R!VERB_NOUN_CCONJ_VERB!Number=Sing!Number=Plur\t0\t2\t5\tVERB\tNumber=Plur\tgo\tgoes"
    "\tgo\t1\tVERB\tDignitaries condemn the act but go\n"
)


def test_gulordava_reader_released_layout_with_tab(tmp_path):
    stem = tmp_path / "generated"
    (tmp_path / "generated.text").write_text(
        "The path we walked today is long .\nDogs condemn the act and go home .\n"
    )
    (tmp_path / "generated.eval").write_text("5\n5\n")
    (tmp_path / "generated.gold").write_text(GOLD_12)
    (tmp_path / "generated.tab").write_text(
        "pattern\tconstr_id\tsent_id\tcorrect_number\tform\tclass\ttype\tprefix\tn_attr\n"
        "L__NOUN_VERB_VERB\t7\t6\tsing\tis\tcorrect\tgenerated\tThe path we walked today\t1\n"
        "L__NOUN_VERB_VERB\t7\t6\tsing\tare\twrong\tgenerated\tThe path we walked today\t1\n"
    )
    items = read_gulordava(stem)
    assert items[0].prefix == ["The", "path", "we", "walked", "today"]
    assert (items[0].correct, items[0].wrong) == (["is"], ["are"])
    assert items[0].distance == 3 and items[0].attractors == 1
    assert items[1].attractors is None and items[1].correct == ["go"]
    assert items[0].meta["category"] == "L__NOUN_VERB_VERB"
    assert read_gulordava(tmp_path / "generated.gold", lowercase=True)[0].prefix[0] == "the"


def test_gulordava_reader_short_gold_and_errors(tmp_path):
    (tmp_path / "g.text").write_text("the cats near the dog are here\n")
    (tmp_path / "g.eval").write_text("5\n")
    (tmp_path / "g.gold").write_text("5\tare\tis\t1\n")
    (item,) = read_gulordava(tmp_path / "g")
    assert item.prefix == ["the", "cats", "near", "the", "dog"] and item.attractors == 1
    (tmp_path / "g.eval").write_text("4\n")
    with pytest.raises(FormatError, match="differs from the .eval"):
        read_gulordava(tmp_path / "g")
    (tmp_path / "g.eval").write_text("9\n")
    with pytest.raises(FormatError, match="outside the sentence"):
        read_gulordava(tmp_path / "g")
    (tmp_path / "g.eval").write_text("5\n5\n")
    with pytest.raises(FormatError, match="line-aligned"):
        read_gulordava(tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="h.text"):
        read_gulordava(tmp_path / "h")


def test_marvin_linzen_reader_json_tsv_and_pickle_guard(tmp_path):
    j = tmp_path / "ml.json"
    j.write_text(
        json.dumps(
            {
                "simple_agrmt": [["The author laughs .", "The author laugh ."]],
                "sent_comp": [
                    ["the mechanics said the author laughs", "the mechanics said the author laugh"]
                ],
            }
        )
    )
    items = read_marvin_linzen(j)
    assert [i.category for i in items] == ["simple_agrmt", "sent_comp"]
    assert items[0].good == ["the", "author", "laughs", "."]
    t = tmp_path / "ml.tsv"
    t.write_text("# comment\nsimple\tthe cat is\tthe cat are\nthe dogs are\tthe dogs is\n")
    items = read_marvin_linzen(t)
    assert [(i.category, i.bad[-1]) for i in items] == [("simple", "are"), ("", "is")]
    p = tmp_path / "ml.pickle"
    p.write_bytes(b"not read")
    with pytest.raises(FormatError, match="allow_pickle=True"):
        read_marvin_linzen(p)
    t.write_text("only one column\n")
    with pytest.raises(FormatError, match="line 1"):
        read_marvin_linzen(t)


# ---- scoring that cannot mislead: unscorable items, NPI triples, original vs nonce -------------
def test_a_pair_that_is_the_same_after_unk_is_unscorable_not_wrong(bigram):
    """'the cat laughs' / 'the cat laugh' with a vocabulary that knows neither verb: both are
    'the cat <unk>', so the model cannot be asked. Counted apart; accuracy is over the rest."""
    model, vocab = bigram
    same = PairItem(["the", "cat", "laughs"], ["the", "cat", "laugh"], "simple")
    right = PairItem(["the", "cats", "are"], ["the", "cats", "is"], "simple")
    rep = score_pair_items(model, vocab, [same, right, same])
    assert [r["correct"] for r in rep.results] == [None, True, None]
    assert rep.n == 1 and rep.correct == 1 and rep.accuracy == 1.0
    assert rep.unscorable == 2 and rep.unscorable_share == 2 / 3
    assert rep.by_category == {"simple": {"n": 1, "accuracy": 1.0, "unscorable": 2}}
    assert rep.to_dict()["unscorable"] == 2
    # every pair unscorable: no accuracy at all, rather than 0.0
    none = score_pair_items(model, vocab, [same])
    assert none.n == 0 and none.unscorable == 1 and math.isnan(none.accuracy)


def test_a_prefix_item_with_unknown_forms_is_unscorable(bigram):
    model, vocab = bigram
    items = [
        PrefixItem(["the", "cat"], ["laughs"], ["laugh"], distance=0),  # neither form known
        PrefixItem(["the", "cat"], ["is"], ["xyz"], distance=0),  # one side unknown
        PrefixItem(["the", "cat"], ["is"], ["are"], distance=0),  # right
    ]
    rep = score_prefix_items(model, vocab, items)
    assert [r["correct"] for r in rep.results] == [None, None, True]
    assert (rep.n, rep.unscorable) == (1, 2)
    assert rep.by_distance == {0: {"n": 1, "accuracy": 1.0, "unscorable": 2}}


def test_marvin_linzen_npi_triples_are_three_contrasts(tmp_path, bigram):
    """[grammatical, intrusive, ungrammatical] gives the paper's three comparisons, each scored
    on its own; a pair file stays one comparison per entry."""
    j = tmp_path / "npi.json"
    j.write_text(json.dumps({"past": [["the cats are", "the cats is", "the cat are"]]}))
    items = read_marvin_linzen(j)
    assert [(i.good, i.bad, i.meta["contrast"]) for i in items] == [
        (["the", "cats", "are"], ["the", "cats", "is"], "grammatical vs intrusive"),
        (["the", "cats", "are"], ["the", "cat", "are"], "grammatical vs ungrammatical"),
        (["the", "cats", "is"], ["the", "cat", "are"], "intrusive vs ungrammatical"),
    ]
    model, vocab = bigram
    rep = score_pair_items(model, vocab, items)
    # by hand with the bigram table: log P(w_t | w_{t-1}) summed after <eos>
    table = model.table.detach()

    def logp(words):
        ids = [vocab.stoi[w] for w in ["<eos>", *words]]
        return sum(float(torch.log_softmax(table[a], 0)[b]) for a, b in zip(ids, ids[1:]))

    want = [logp(i.good) > logp(i.bad) for i in items]
    assert [r["correct"] for r in rep.results] == want
    assert set(rep.by_contrast) == {i.meta["contrast"] for i in items}
    j.write_text(json.dumps({"past": [["a", "b", "c", "d"]]}))
    with pytest.raises(FormatError, match="for NPIs, \\[grammatical, intrusive, ungrammatical\\]"):
        read_marvin_linzen(j)


def test_gulordava_original_and_nonce_are_reported_apart(tmp_path, bigram):
    """From the .tab's type column when present (generated -> nonce), else from the gold row:
    an original sentence's own prefix is the gold row's last column."""
    (tmp_path / "g.text").write_text("the cat is here .\nthe dog is here .\n")
    (tmp_path / "g.eval").write_text("2\n2\n")
    gold = "L!NOUN_VERB!Number=Sing!Number=Sing\t1\t{sid}\t2\tVERB\tNumber=Sing\tis\tare\tbe\t1"
    gold += "\tNOUN\tthe cat is\n"
    (tmp_path / "g.gold").write_text(gold.format(sid=0) + gold.format(sid=1))
    items = read_gulordava(tmp_path / "g")
    assert [i.meta["type"] for i in items] == ["original", "nonce"]
    (tmp_path / "g.tab").write_text(
        "pattern\tconstr_id\tsent_id\tform\tclass\ttype\tn_attr\n"
        "L__NOUN_VERB\t1\t0\tis\tcorrect\tgenerated\t0\n"
        "L__NOUN_VERB\t1\t1\tis\tcorrect\toriginal\t0\n"
    )
    items = read_gulordava(tmp_path / "g")
    assert [i.meta["type"] for i in items] == ["nonce", "original"]  # the .tab wins
    model, vocab = bigram
    rep = score_prefix_items(model, vocab, items)
    assert set(rep.by_type) == {"original", "nonce"}
    assert all(v["n"] == 1 for v in rep.by_type.values())
    assert "by sentence type" in format_report(rep)


def test_marvin_linzen_suite_table(tmp_path, bigram, capsys):
    """A folder with two of the paper's tests: rows named as in the paper, anim + inanim files
    merged into one row, unscorable pairs counted, NPI contrasts apart; the CLI prints the table
    and writes the same rows as JSON."""
    from lstmkit.agreement.suites import format_suite_table, score_marvin_linzen

    folder = tmp_path / "ml"
    folder.mkdir()
    simple = {"sing": [["the cat is", "the cat are"], ["the cat laughs", "the cat laugh"]]}
    (folder / "simple_agrmt.json").write_text(json.dumps(simple))
    for stem in ("simple_npi_anim", "simple_npi_inanim"):
        (folder / f"{stem}.json").write_text(
            json.dumps({"past": [["the cats are", "the cats is", "the cat are"]]})
        )
    model, vocab = bigram
    rows = score_marvin_linzen(model, vocab, folder)
    by_name = {(r.section, r.phenomenon, r.contrast): r for r in rows}
    simple_row = by_name[("agreement", "simple", None)]
    assert (simple_row.n, simple_row.unscorable, simple_row.accuracy) == (1, 1, 1.0)
    npi = [r for r in rows if r.section == "NPI"]
    assert len(npi) == 3 and all(r.n == 2 for r in npi)  # anim + inanim: one row each contrast
    assert npi[0].files == ["simple_npi_anim", "simple_npi_inanim"]
    table = format_suite_table(rows)
    assert "1 (50%)" in table and "simple (grammatical vs intrusive)" in table
    # thinning keeps a triple's three contrasts together
    few = score_marvin_linzen(model, vocab, folder, per_test=1)
    assert [r.n for r in few if r.section == "agreement"] == [1]

    from lstmkit.cli.main import main
    from lstmkit.training.checkpoint import save_checkpoint
    from lstmkit.training.model import LanguageModel, ModelConfig

    cfg = ModelConfig(vocab_size=len(vocab), emb_size=4, hidden_size=4, num_layers=1)
    save_checkpoint(tmp_path / "ck", LanguageModel(cfg), cfg, vocab, data={"level": "word"})
    out_json = tmp_path / "suite.json"
    assert (
        main(
            [
                "agreement",
                "suite",
                str(tmp_path / "ck"),
                "--data",
                str(folder),
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "agreement  simple" in printed and "NPI" in printed
    saved = json.loads(out_json.read_text())["rows"]
    assert [r["phenomenon"] for r in saved] == [r.phenomenon for r in rows]
    assert saved[0]["unscorable"] == 1


# ---- the report's fields, breakdowns and text, and the scorer's plumbing ------------------------
def test_prefix_results_and_breakdowns_by_number_and_category(bigram):
    """Each item's result row, exactly; subject number from meta["plural"] (True / False; absent:
    not in the table); a missing category is "" and left out of the table, like a missing number.
    OOV and total tokens count the context words of the scorable items only."""
    model, vocab = bigram
    items = [
        PrefixItem(  # right: after "cat", is (e^2) vs are (e^0)
            ["the", "cat"], ["is"], ["are"], 0, 0, {"plural": False, "category": "simple"}
        ),
        PrefixItem(  # right
            ["the", "cats"], ["are"], ["is"], 0, 0, {"plural": True, "category": "simple"}
        ),
        PrefixItem(  # wrong: the last word is "cat"; "a" is out of the vocabulary
            ["the", "dogs", "near", "a", "cat"],
            ["are"],
            ["is"],
            3,
            1,
            {"plural": True, "category": "pp", "type": "nonce"},
        ),
        PrefixItem(["the", "kitten"], ["is"], ["laughs"], 0, None, {"plural": False}),  # unscorable
        PrefixItem(["the", "dog"], ["is"], ["are"], 0),  # right; no number, no category
    ]
    rep = score_prefix_items(model, vocab, items)
    assert all("margin" in r for r in rep.results)  # None for the unscorable one
    margins = [r.pop("margin") for r in rep.results]
    assert margins[:3] + margins[4:] == pytest.approx([2.0, 2.0, -2.0, 2.0], abs=1e-6)
    assert margins[3] is None
    row = {"distance": 0, "attractors": 0, "category": "simple", "type": None}
    assert rep.results == [
        {**row, "number": "singular", "correct": True},
        {**row, "number": "plural", "correct": True},
        {"distance": 3, "attractors": 1, "category": "pp", "number": "plural", "type": "nonce",
         "correct": False},
        {"distance": 0, "attractors": None, "category": "", "number": "singular", "type": None,
         "correct": None},
        {"distance": 0, "attractors": None, "category": "", "number": None, "type": None,
         "correct": True},
    ]  # fmt: skip
    assert rep.by_number == {
        "plural": {"n": 2, "accuracy": 0.5, "unscorable": 0},
        "singular": {"n": 1, "accuracy": 1.0, "unscorable": 1},
    }
    assert rep.majority_baseline == 2 / 3
    assert rep.by_category == {
        "pp": {"n": 1, "accuracy": 0.0, "unscorable": 0},
        "simple": {"n": 2, "accuracy": 1.0, "unscorable": 0},
    }
    assert rep.by_type == {"nonce": {"n": 1, "accuracy": 0.0, "unscorable": 0}}
    assert (rep.oov_tokens, rep.total_tokens) == (1, 2 + 2 + 5 + 2)


def test_prefix_form_lists_are_aligned_only_when_of_equal_length(bigram):
    """Equal lengths: pairs, a pair dropped when either form is unknown. Unequal: each list on
    its own. A side left with no known form makes the item unscorable even if the other has some."""
    model, vocab = bigram
    items = [
        PrefixItem(["the", "cat"], ["is", "was"], ["are", "xyz"]),  # (was, xyz) dropped: is vs are
        PrefixItem(["the", "cat"], ["is", "was"], ["are"]),  # is + was vs are
        PrefixItem(["the", "cat"], ["is", "was"], ["xyz"]),  # nothing on the wrong side
    ]
    rep = score_prefix_items(model, vocab, items)
    assert rep.results[0]["margin"] == pytest.approx(2.0, abs=1e-6)
    assert rep.results[1]["margin"] == pytest.approx(math.log(math.exp(2) + math.e), abs=1e-6)
    assert rep.results[2]["correct"] is None and rep.results[2]["margin"] is None
    assert (rep.n, rep.correct, rep.unscorable) == (2, 2, 1)


def test_pair_scorer_counts_oov_and_total_tokens_of_both_sentences(bigram):
    model, vocab = bigram
    pairs = [
        PairItem(["the", "zebra", "is"], ["the", "zebra", "are"]),  # 2 OOV of 6
        PairItem(["the", "cats", "are"], ["the", "cats", "near", "is"]),  # 0 OOV of 7
    ]
    rep = score_pair_items(model, vocab, pairs)
    assert (rep.oov_tokens, rep.total_tokens) == (2, 13)
    assert rep.oov_share == 2 / 13


def _first_word_vocab() -> Vocab:
    """The bigram's vocabulary with "<eos>" renamed "<s>": same ids, no default bos."""
    return Vocab(["<unk>", "<s>", *WORDS[2:]])


def test_pair_scorer_scores_the_first_word_only_after_a_bos(bigram):
    """With a bos the first word is scored (P(the | <eos>) vs P(dogs | <eos>)); without one
    (bos=None, or a vocabulary without it) scoring starts at the second word."""
    model, vocab = bigram
    pair = PairItem(["the", "cat"], ["dogs", "cat"])
    # by hand from the table: row <eos> has "the" = 3 (Z = e^3 + 11), row "the" is flat (Z = 12),
    # row "dogs" has are = 2 and were = 1 (Z = e^2 + e + 10); every other logit 0
    z_eos, z_dogs = math.exp(3) + 11, math.exp(2) + math.e + 10
    with_bos = (3 - math.log(z_eos)) - math.log(12) - (-math.log(z_eos) - math.log(z_dogs))
    without = -math.log(12) + math.log(z_dogs)
    margin = lambda rep: rep.results[0]["margin"]  # noqa: E731
    assert margin(score_pair_items(model, vocab, [pair])) == pytest.approx(with_bos, abs=1e-5)
    assert margin(score_pair_items(model, vocab, [pair], bos=None)) == pytest.approx(
        without, abs=1e-5
    )
    other = _first_word_vocab()
    assert margin(score_pair_items(model, other, [pair])) == pytest.approx(without, abs=1e-5)
    assert margin(score_pair_items(model, other, [pair], bos="<s>")) == pytest.approx(
        with_bos, abs=1e-5
    )
    # prefix items too: without a bos the sequence is the prefix alone (the bigram reads its
    # last word either way)
    item = PrefixItem(["the", "cat"], ["is"], ["are"])
    for v, bos in ((vocab, None), (other, "<eos>"), (other, "<s>")):
        rep = score_prefix_items(model, v, [item], bos=bos)
        assert rep.results[0]["margin"] == pytest.approx(2.0, abs=1e-6)


class InterventionLM(BigramLM):
    """The bigram, whose logits an intervention negates; it records what it was given."""

    def __init__(self, table: torch.Tensor):
        super().__init__(table)
        self.seen: list = []

    def forward(self, tokens, hidden=None, return_trace=False, intervention=None):
        self.seen.append(intervention)
        logits = self.table[tokens]
        return (logits if intervention is None else -logits), hidden


def test_the_intervention_reaches_the_model(bigram):
    table, vocab = bigram[0].table.detach(), bigram[1]
    model, edit = InterventionLM(table), object()
    rep = score_prefix_items(model, vocab, [PrefixItem(["the", "cat"], ["is"], ["are"])])
    assert rep.results[0]["margin"] == pytest.approx(2.0, abs=1e-6) and model.seen == [None]
    rep = score_prefix_items(
        model, vocab, [PrefixItem(["the", "cat"], ["is"], ["are"])], intervention=edit
    )
    assert rep.results[0]["margin"] == pytest.approx(-2.0, abs=1e-6)  # is: -2, are: 0
    assert model.seen == [None, edit]
    # negated "dogs" row: are = -2, is = 0; the shared words score the same in both sentences
    pair = PairItem(["the", "dogs", "are"], ["the", "dogs", "is"])
    rep = score_pair_items(model, vocab, [pair], intervention=edit)
    assert rep.results[0]["margin"] == pytest.approx(-2.0, abs=1e-5)
    assert model.seen == [None, edit, edit]


class Untouchable:
    """A model that must not be used: any attribute access fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used (.{name}) though no item is scorable")


def test_nothing_scorable_never_runs_the_model(bigram):
    vocab = bigram[1]
    rep = score_prefix_items(Untouchable(), vocab, [PrefixItem(["the"], ["xyz"], ["abc"])])
    assert (rep.n, rep.unscorable) == (0, 1)
    same = PairItem(["the", "cat", "laughs"], ["the", "cat", "laugh"])
    rep = score_pair_items(Untouchable(), vocab, [same])
    assert (rep.n, rep.unscorable) == (0, 1)


class BufferBigramLM(nn.Module):
    """The bigram with its table a buffer: a model without parameters."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, tokens, hidden=None, return_trace=False):
        return self.table[tokens], hidden


def test_a_model_without_parameters_is_scored_on_the_cpu(bigram):
    model, vocab = BufferBigramLM(bigram[0].table.detach().clone()), bigram[1]
    assert _device(model) == torch.device("cpu")
    rep = score_prefix_items(model, vocab, [PrefixItem(["the", "cat"], ["is"], ["are"])])
    assert rep.results[0]["margin"] == pytest.approx(2.0, abs=1e-6)
    rep = score_pair_items(model, vocab, [PairItem(["the", "dogs", "are"], ["the", "dogs", "is"])])
    assert rep.results[0]["margin"] == pytest.approx(2.0, abs=1e-5)
    # a model with parameters runs where they are (meta: a device that is not the CPU)
    assert _device(nn.Linear(2, 2, device="meta")) == torch.device("meta")


def test_padded_ids_are_int64_whatever_the_pad_and_never_invented():
    tokens, lengths = _padded([[3, 4, 5], [6]], pad=0)
    assert tokens.dtype == torch.long and tokens.tolist() == [[3, 6], [4, 0], [5, 0]]
    assert lengths.tolist() == [3, 1]
    tokens, _ = _padded([[3, 4], [6]], pad=0.0)  # e.g. a pad id read from a float field
    assert tokens.dtype == torch.long and tokens.tolist() == [[3, 6], [4, 0]]
    with pytest.raises(RuntimeError, match="int64"):  # a NaN is no id (never INT64_MIN)
        _padded([[3, float("nan")]], pad=0)


def _hand_report() -> AgreementReport:
    return AgreementReport(
        n=4,
        correct=3,
        unscorable=4,
        oov_tokens=1,
        total_tokens=8,
        by_distance={
            0: {"n": 3, "accuracy": 2 / 3, "unscorable": 1},
            12: {"n": 1, "accuracy": 1.0, "unscorable": 3},
        },
        by_attractors={1: {"n": 4, "accuracy": 0.75, "unscorable": 0}},
        by_category={"simple": {"n": 4, "accuracy": 0.75, "unscorable": 4}},
        by_number={
            "plural": {"n": 1, "accuracy": 1.0, "unscorable": 0},
            "singular": {"n": 3, "accuracy": 2 / 3, "unscorable": 4},
        },
        by_type={"nonce": {"n": 2, "accuracy": 0.5, "unscorable": 0}},
        by_contrast={"grammatical vs intrusive": {"n": 4, "accuracy": 0.75, "unscorable": 0}},
    )


def test_report_to_dict_exactly():
    rep = _hand_report()
    assert rep.to_dict() == {
        "n": 4,
        "correct": 3,
        "accuracy": 0.75,
        "unscorable": 4,
        "unscorable_share": 0.5,
        "oov_tokens": 1,
        "total_tokens": 8,
        "oov_share": 0.125,
        "by_distance": {
            "0": {"n": 3, "accuracy": 2 / 3, "unscorable": 1},
            "12": {"n": 1, "accuracy": 1.0, "unscorable": 3},
        },
        "by_attractors": {"1": {"n": 4, "accuracy": 0.75, "unscorable": 0}},
        "by_category": {"simple": {"n": 4, "accuracy": 0.75, "unscorable": 4}},
        "by_number": {
            "plural": {"n": 1, "accuracy": 1.0, "unscorable": 0},
            "singular": {"n": 3, "accuracy": 2 / 3, "unscorable": 4},
        },
        "by_type": {"nonce": {"n": 2, "accuracy": 0.5, "unscorable": 0}},
        "by_contrast": {"grammatical vs intrusive": {"n": 4, "accuracy": 0.75, "unscorable": 0}},
        "majority_baseline": 0.75,
    }
    json.dumps(rep.to_dict())  # string keys: JSON as is


FORMATTED = """\
accuracy 0.750 on 4 scorable items; 4 unscorable (50.0%: the forms that differ are not in the \
vocabulary); OOV share of words 12.5%
  always answering the more frequent subject number would score 0.750
  by distance:
                               0  0.667  (n=3, 1 unscorable)
                              12  1.000  (n=1, 3 unscorable)
  by attractors:
                               1  0.750  (n=4)
  by subject number:
                          plural  1.000  (n=1)
                        singular  0.667  (n=3, 4 unscorable)
  by sentence type:
                           nonce  0.500  (n=2)
  by contrast:
        grammatical vs intrusive  0.750  (n=4)
  by category:
                          simple  0.750  (n=4, 4 unscorable)"""


def test_format_report_exact_text():
    rep = _hand_report()
    assert format_report(rep) == FORMATTED
    assert format_report(rep, "Linzen test") == "Linzen test\n" + FORMATTED
    empty = AgreementReport(n=0, correct=0, unscorable=0, oov_tokens=0, total_tokens=0)
    assert format_report(empty) == (
        "accuracy nan on 0 scorable items; 0 unscorable (0.0%: the forms that differ are not in "
        "the vocabulary); OOV share of words 0.0%"
    )


def test_an_empty_prefix_without_a_bos_is_unscorable(bigram):
    """Nothing to predict from: unscorable, not a margin read at some padded position."""
    model, vocab = bigram
    items = [PrefixItem([], ["is"], ["are"]), PrefixItem(["the", "cat"], ["is"], ["are"])]
    rep = score_prefix_items(model, vocab, items, bos=None)
    assert [r["correct"] for r in rep.results] == [None, True]
    assert rep.results[1]["margin"] == pytest.approx(2.0, abs=1e-6)
    assert score_prefix_items(model, vocab, items[:1], bos="<eos>").n == 1  # <eos> is a context


def test_scoring_gives_every_submodule_its_own_mode_back(bigram):
    model, vocab = bigram
    inner = nn.Linear(2, 2)
    model.inner = inner
    model.train()
    inner.eval()
    score_prefix_items(model, vocab, [PrefixItem(["the"], ["cat"], ["dog"])])
    score_pair_items(model, vocab, [PairItem(["the", "cat"], ["the", "dog"])])
    assert model.training and not inner.training


def test_unscorable_pairs_do_not_count_in_the_oov_share(bigram):
    model, vocab = bigram
    same = PairItem(["the", "cat", "laughs"], ["the", "cat", "laugh"])
    right = PairItem(["the", "cats", "are"], ["the", "cats", "is"])
    rep = score_pair_items(model, vocab, [same, right])
    assert (rep.oov_tokens, rep.total_tokens) == (0, 6)


def test_the_comparison_table_prints_every_breakdown_side_by_side():
    """format_comparison: a header naming the intervention, the overall line, then one line per
    distance, attractor count and category, without and with, each right-aligned."""
    from lstmkit.agreement.score import AgreementReport, format_comparison

    def report(correct, by):
        return AgreementReport(
            n=4, correct=correct, unscorable=0, oov_tokens=0, total_tokens=10,
            by_distance={1: {"n": 4, "accuracy": by[0]}},
            by_attractors={0: {"n": 3, "accuracy": by[1]}},
            by_category={"simple": {"n": 4, "accuracy": by[2]}},
        )  # fmt: skip

    text = format_comparison(report(3, (0.75, 1.0, 0.5)), report(2, (0.5, 0.25, 0.0)), "1:c:3")
    want = [
        " " * 30 + "   without      with   (1:c:3)",
        " " * 27 + "all     0.750     0.500   n=4",
        " " * 20 + "distance 1     0.750     0.500   n=4",
        " " * 18 + "attractors 0     1.000     0.250   n=3",
        " " * 15 + "category simple     0.500     0.000   n=4",
    ]
    assert text.split("\n") == want
