"""RNNs in inference. nn.GRU (and nn.RNN) reach the ATen graph already unrolled by PyTorch's own
decomposition into linear / sigmoid / tanh / mul per time step. nn.LSTM on a CPU build with
oneDNN becomes aten.mkldnn_rnn_layer, one call per layer and direction; it is rewritten here the
same way (PyTorch's one_layer_lstm): the input projection for all steps in one GEMM, then per step
gates = h W_hh^T + b_hh + x_t W_ih^T + b_ih, i/f/o = sigmoid, g = tanh, c = f c + i g, h = o tanh(c).

Note: Dynamo leaves nn.LSTM / nn.GRU modules to eager (a graph break) unless
torch._dynamo.config.allow_rnn is True."""
from __future__ import annotations

import torch

from ..registry import register_decomposition

aten = torch.ops.aten


@register_decomposition(aten.mkldnn_rnn_layer.default,
                        notes="unrolled per time step into linear/sigmoid/tanh/mul (LSTM)")
def mkldnn_lstm_layer(inp, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, batch_sizes, mode, hidden_size,
                      num_layers, has_biases, bidirectional, batch_first, train):
    if batch_sizes or mode != 2 or num_layers != 1 or bidirectional or train:
        return NotImplemented  # packed sequences / other cell kinds: stays an (unsupported) node
    x = inp.transpose(0, 1) if batch_first else inp  # [T, B, I]
    steps = x.shape[0]
    pre = torch.nn.functional.linear(x, w_ih, b_ih if has_biases else None)  # [T, B, 4H]
    w_hh_t = w_hh.t()
    h, c = hx[0], cx[0]  # [B, H]
    outputs = [None] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        gates = torch.mm(h, w_hh_t)
        if has_biases:
            gates = gates + b_hh
        gates = gates + pre[t]
        i, f, g, o = gates.chunk(4, 1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        outputs[t] = h
    y = torch.stack(outputs, 0) if steps else x.new_zeros(0, hx.shape[1], hidden_size)
    if batch_first:
        y = y.transpose(0, 1)
    return y, h.unsqueeze(0), c.unsqueeze(0), inp.new_empty(0)
