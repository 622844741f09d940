import pytest
import torch

from lstmkit.data.batching import batchify, get_window, num_windows, windows


def test_batchify_columns_are_contiguous_streams():
    ids = torch.arange(23)
    data = batchify(ids, 4)  # N = 5, tail of 3 dropped
    assert data.shape == (5, 4)
    for b in range(4):
        assert torch.equal(data[:, b], torch.arange(b * 5, b * 5 + 5))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_together_hold_the_single_process_batch(world):
    ids = torch.arange(101)
    full = batchify(ids, 8)
    parts = [batchify(ids, 8, rank=r, world_size=world) for r in range(world)]
    assert torch.equal(torch.cat(parts, dim=1), full)
    for p in parts:  # each rank's part is one contiguous stretch of the stream
        flat = p.t().reshape(-1)
        assert torch.equal(flat, torch.arange(flat[0], flat[0] + flat.numel()))


@pytest.mark.parametrize("N, bptt", [(10, 3), (10, 9), (10, 20), (2, 1)])
def test_windows_cover_every_target_once_in_order(N, bptt):
    data = torch.arange(N * 2).view(2, N).t().contiguous()  # (N, 2)
    xs, ys = [], []
    k = -1
    for k, x, y in windows(data, bptt):  # noqa: B007 (k is checked after the loop)
        assert x.shape == y.shape and x.shape[0] <= bptt
        assert torch.equal(y, x + 1)  # targets are the next token of each stream
        xs.append(x)
        ys.append(y)
    assert k == num_windows(data, bptt) - 1
    assert torch.equal(torch.cat(ys), data[1:])
    assert torch.equal(torch.cat(xs), data[:-1])


def test_resume_position_and_errors():
    data = batchify(torch.arange(40), 2)
    assert [k for k, _, _ in windows(data, 4, start=3)] == [3, 4]
    with pytest.raises(IndexError, match="past the end"):
        get_window(data, 5, 4)
    with pytest.raises(ValueError, match="too few"):
        batchify(torch.arange(5), 4)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        batchify(torch.arange(50), 3, world_size=2)
