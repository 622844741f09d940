"""The demo: does a plain RNN carry a subject's number across a gap, and does an LSTM?

    from lstmkit.demo.run import run_demo
    run_demo(DemoConfig(out="lstmkit-demo"))

1. Generate an agreement corpus with the built-in grammar (no download): training sentences
   with 0..max_train_distance words between subject and verb, and a test set with `per_distance`
   sentences at every distance 0..max_test_distance (longer than any seen in training).
2. Train a plain (tanh) RNN and an LSTM language model of the same size on it.
3. Score both, every steps/12 steps while training and at the end: a test sentence is right
   when the model gives the correct verb form a higher probability than the wrong one after
   the prefix. Accuracy by distance and by attractors, and how many steps each model needs
   before it is right at long distances.
4. Read the LSTM's cell states (and the RNN's hidden states) at the steps between subject and
   verb, and rank the cells by how well each alone predicts the subject's number on held-out
   sentences; plot the best cell over time.
5. Write the report folder (index.html, PNGs, figures.json, summary.json, the interactive
   inspect.html, and both models as lstmkit checkpoints) and return the summary.
"""

from lstmkit.demo.config import DemoConfig

__all__ = ["DemoConfig"]
