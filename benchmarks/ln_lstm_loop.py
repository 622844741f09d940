"""The layer-norm LSTM as a user would write it: a plain PyTorch loop of autograd ops.

This is the baseline of issue 5's layer-norm target ("at least 3x faster than the same cell
written as a plain PyTorch loop of autograd ops"). It computes exactly lstmkit's
LSTM(layer_norm=True) (Ba et al. 2016: layer norm on W_ih x, on W_hh h and on c), takes that
layer's parameters, and is checked against it in tests/test_benchmark_engines.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lstmkit.cells.base import LN_EPS


class PlainLayerNormLSTM(nn.Module):
    """One layer, time-major (T, B, I) -> ((T, B, H), (h_T, c_T)); parameters shared with
    `layer`, a one-layer unidirectional lstmkit.LSTM(layer_norm=True)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if layer.num_layers != 1 or layer.bidirectional or layer.proj_size:
            raise ValueError("PlainLayerNormLSTM mirrors a one-layer unidirectional LSTM only")
        self.layer = layer  # its parameters are this module's parameters

    def forward(self, x: Tensor, return_trace: bool = False):
        if return_trace:
            raise ValueError("the plain loop has no trace")
        P = dict(self.layer.named_parameters())
        T, B, _ = x.shape
        H = self.layer.hidden_size
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        outs = []
        for t in range(T):
            gi = F.layer_norm(
                x[t] @ P["weight_ih_l0"].t(), (4 * H,), P["ln_weight_ih_l0"], None, LN_EPS
            )
            gh = F.layer_norm(
                h @ P["weight_hh_l0"].t(), (4 * H,), P["ln_weight_hh_l0"], None, LN_EPS
            )
            i, f, g, o = (gi + P["bias_ih_l0"] + gh + P["bias_hh_l0"]).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            cn = F.layer_norm(c, (H,), P["ln_weight_c_l0"], P["ln_bias_c_l0"], LN_EPS)
            h = torch.sigmoid(o) * torch.tanh(cn)
            outs.append(h)
        return torch.stack(outs), (h, c)
