"""The demo's own rules (lstmkit/demo): which ablation sizes it tries, which seed it inspects,
and what its report says about an ablation."""

from __future__ import annotations

from types import SimpleNamespace

from lstmkit.demo.causal import _ablation_words, ablation_sizes
from lstmkit.demo.config import DemoConfig
from lstmkit.demo.run import _best_seeds


def test_ablation_sizes_leave_as_many_other_cells_for_the_control() -> None:
    assert ablation_sizes(DemoConfig(hidden_size=64)) == [1, 2, 4, 8]
    assert ablation_sizes(DemoConfig(hidden_size=8)) == [1, 2, 4]  # 8 would leave none
    assert ablation_sizes(DemoConfig(hidden_size=3)) == [1]
    # the cell finder ranks 10 cells: more cannot be 'the best k'
    assert ablation_sizes(DemoConfig(hidden_size=512, ablate=(1, 10, 16))) == [1, 10]


def test_the_inspected_model_is_each_kinds_most_accurate_seed_first_on_ties() -> None:
    r = [SimpleNamespace(accuracy=a) for a in (0.5, 0.97, 0.97)]
    l = [SimpleNamespace(accuracy=a) for a in (1.0, 0.99, 1.0)]
    assert _best_seeds({"rnn": r, "lstm": l}) == {"rnn": 1, "lstm": 0}


def test_the_report_names_the_fewest_cells_that_break_long_distance_agreement() -> None:
    def entry(short, long, rand):
        return {"ranked": {"short": short, "long": long}, "random": {"long": rand}}

    summary = {
        "lstm": {
            "intact": {"long": 1.0},
            "1": entry(1.0, 0.95, [1.0, 1.0]),
            "2": entry(1.0, 0.55, [1.0, 0.98]),
            "4": entry(1.0, 0.5, [1.0, 1.0]),
        },
        "rnn": {
            "intact": {"long": 0.7},
            **{str(k): entry(0.9, 0.69, [0.7]) for k in (1, 2)},
            "4": entry(0.9, 0.65, [0.7]),
        },
    }
    text = _ablation_words(summary, [1, 2, 4])
    assert (
        "LSTM: zeroing its best 2 cell(s) takes long-distance agreement from 1.000 to 0.550" in text
    )
    assert "short distances stay at 1.000; 2 random cells: 0.990." in text
    assert "RNN: zeroing up to 4 of its best cells leaves long-distance agreement at 0.650" in text
