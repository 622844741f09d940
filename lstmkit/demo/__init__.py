"""The demo: does a plain RNN carry a subject's number across a gap, and does an LSTM?

    from lstmkit.demo.run import run_demo
    run_demo(DemoConfig(out="lstmkit-demo"))

1. Generate an agreement corpus with the built-in grammar (no download): training sentences
   with 0..max_train_distance words between subject and verb, and a test set with `per_distance`
   sentences at every distance 0..max_test_distance (longer than any seen in training).
2. Train a plain (tanh) RNN and an LSTM language model of the same size from each of `seeds`
   seeds, all for the same fixed budget of `steps` steps.
3. Score them, every steps/12 steps while training and at the end: a test sentence is right
   when the model gives the correct verb form a higher probability than the wrong one after
   the prefix. The headline: accuracy by distance at the budget, mean and range over seeds;
   then by attractors, and how many steps each model needs before it is right at long
   distances (what more training would do).
4. Look inside each kind's most accurate model: rank the cells (the LSTM's cell state c, the
   RNN's h) by how well each alone predicts the subject's number on held-out sentences; plot
   the best cell over time.
5. The causal test (lstmkit/demo/causal.py): zero the best k cells at every step and score
   again, against k random other cells (Lakretz et al. 2019); and probes with control tasks
   (Hewitt & Liang 2019) on the same cells, on fresh sentences.
6. Write the report folder (index.html, PNGs, figures.json, summary.json, the interactive
   inspect.html, the inspected models as lstmkit checkpoints) and return the summary.
"""

from lstmkit.demo.config import DemoConfig

__all__ = ["DemoConfig"]
