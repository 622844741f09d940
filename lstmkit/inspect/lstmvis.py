"""Export to LSTMVis (Strobelt et al., github.com/HendrikStrobelt/LSTMVis) input format.

    export_lstmvis(states, "out/lstmvis/my_model", name="my model")

writes a project directory LSTMVis's server picks up (`python lstm_server.py -dir out/lstmvis`):

    states.hdf5    one (N, H) float32 dataset per state, N = all tokens of all sentences in order:
                   states1 (LSTM cell c, or the hidden h of a GRU / RNN), output1 (hidden h), and
                   the gates as gate_i1, gate_f1, ... (not referenced by lstm.yml; for scripts)
    words.hdf5     word_ids (N,) int64: the word id at each position (ids start at 1)
    words.dict     one "word id" line per word, as LSTMVis's txt_to_hdf5_dict.py writes it
    lstm.yml       the project config that ties them together

Sentences are joined into one stream with an end-of-sentence token `</s>` after each, so the
stream has one more position per sentence than the text; its states are copied from the
sentence's last word (LSTMVis needs a value at every position).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmkit.inspect.states import StateSet

END = "</s>"


def _stream(states: StateSet, name: str) -> np.ndarray:
    parts = []
    for vals in states.values[name]:
        parts += [vals, vals[-1:]]  # the </s> position repeats the last word's state
    return np.concatenate(parts).astype(np.float32)


def export_lstmvis(
    states: StateSet,
    directory: str | Path,
    name: str = "lstmkit model",
    description: str = "exported by lstmkit inspect lstmvis",
) -> Path:
    import h5py

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    words: dict[str, int] = {}
    ids = []
    for toks in states.tokens:
        for w in [*toks, END]:
            ids.append(words.setdefault(w, len(words) + 1))
    main = "c" if "c" in states.values else "h"
    with h5py.File(d / "states.hdf5", "w") as f:
        f["states1"] = _stream(states, main)
        f["output1"] = _stream(states, "h")
        for gate in states.names:
            if gate not in ("c", "h"):
                f[f"gate_{gate}1"] = _stream(states, gate)
        f.attrs["mode"] = states.mode
        f.attrs["states1_is"] = "cell state c" if main == "c" else "hidden state h"
    with h5py.File(d / "words.hdf5", "w") as f:
        f["word_ids"] = np.asarray(ids, dtype=np.int64)
    with open(d / "words.dict", "w", encoding="utf-8") as f:
        for w, i in words.items():
            f.write(f"{w} {i}\n")
    safe = lambda s: s.replace("\n", " ").replace(":", " -")  # noqa: E731 - YAML plain scalars
    (d / "lstm.yml").write_text(
        f"name: {safe(name)}\n"
        f"description: {safe(description)}\n"
        "\n"
        "files:\n"
        "  states: states.hdf5\n"
        "  word_ids: words.hdf5\n"
        "  words: words.dict\n"
        "\n"
        "word_sequence:\n"
        "  file: word_ids\n"
        "  path: word_ids\n"
        "  dict_file: words\n"
        "\n"
        "states:\n"
        "  file: states\n"
        "  types: [\n"
        "    {type: state, layer: 1, path: states1},\n"
        "    {type: output, layer: 1, path: output1}\n"
        "  ]\n",
        encoding="utf-8",
    )
    return d
