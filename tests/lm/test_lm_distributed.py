"""`lstmkit train` under torchrun: 2 CPU processes (gloo) against one process, same global batch."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from lm_helpers import tiny_corpus

from lstmkit.training import TrainConfig, load_checkpoint, train
from lstmkit.training.checkpoint import load_training_state

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    train_file, valid_file = tiny_corpus(tmp_path)
    common = dict(
        batch_size=4,
        bptt=8,
        epochs=2,
        max_steps=12,
        eval_every=5,
        lr=1.0,
        clip=0.5,
        model={"emb_size": 12, "hidden_size": 12},
        seed=5,
        progress=False,
        threads=1,
    )
    single = train(
        TrainConfig(
            train_file=str(train_file),
            valid_file=str(valid_file),
            out=str(tmp_path / "one"),
            **common,
        )
    )

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "lstmkit.cli.main",
        "train",
        "--train",
        str(train_file),
        "--valid",
        str(valid_file),
        "--out",
        str(tmp_path / "two"),
        "--batch-size",
        "4",
        "--bptt",
        "8",
        "--epochs",
        "2",
        "--max-steps",
        "12",
        "--eval-every",
        "5",
        "--lr",
        "1.0",
        "--clip",
        "0.5",
        "--emb-size",
        "12",
        "--hidden-size",
        "12",
        "--seed",
        "5",
        "--no-progress",
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("done: 12 steps") == 1  # rank 0 alone reports
    assert "2 processes" in proc.stdout

    a = load_checkpoint(tmp_path / "one" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "two" / "last").model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    sa, ta = load_training_state(tmp_path / "one" / "last")
    sb, tb = load_training_state(tmp_path / "two" / "last")
    assert sa["step"] == sb["step"] == single.steps == 12 and sa["tokens"] == sb["tokens"]
    # the saved hidden state is the global batch's, gathered from both ranks
    assert tb["hidden.0"].shape == ta["hidden.0"].shape == (2, 4, 12)
    torch.testing.assert_close(tb["hidden.0"], ta["hidden.0"], rtol=1e-4, atol=1e-5)
    va = [h["valid"]["nats"] for h in sa["history"] if h["valid"]]
    vb = [h["valid"]["nats"] for h in sb["history"] if h["valid"]]
    assert len(va) == len(vb) >= 2
    torch.testing.assert_close(torch.tensor(vb), torch.tensor(va), rtol=1e-5, atol=1e-6)
    # a checkpoint written by 2 processes resumes in 1 (the saved hidden state is global)
    for run in ("one", "two"):
        train(
            TrainConfig(
                train_file=str(train_file),
                valid_file=str(valid_file),
                out=str(tmp_path / run),
                **dict(common, max_steps=20),
            ),
            resume=True,
        )
    a = load_checkpoint(tmp_path / "one" / "last").model.state_dict()
    b = load_checkpoint(tmp_path / "two" / "last").model.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
