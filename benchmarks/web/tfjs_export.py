"""PyTorch model -> a TensorFlow.js op list (JSON) + float32 weights (binary), run by tfjs_graph.mjs.

There is no PyTorch -> TF.js converter here, so the web benchmark (compare.py) gives TF.js the same
weights this way: torch.export's ATen graph is walked node by node and each node becomes a tf op,
the way TF.js's own converter would emit a graph model for the same network:

- Images are NHWC in TF.js (its convolutions, XNNPACK's, take no other layout): a rank-4 graph input
  is fed NHWC and everything computed from it by convolutions, pooling and elementwise ops stays
  NHWC; the exporter tracks which values are NHWC and transposes the few that leave that world
  (a flatten of a map larger than 1x1, a graph output). Other tensors keep PyTorch's layout.
- Convolution weights are transposed to TF's filter layouts ([kh, kw, in, out]; depthwise
  [kh, kw, in, multiplier]); a batch norm right after a convolution is folded into its weights and
  bias, and a relu / relu6 after that (or after a linear) becomes the fused op's activation, which
  is what tf.fused.conv2d / depthwiseConv2d / matMul take (and what the converter produces).
- Linear weights are stored [in, out] (a Keras Dense kernel's layout).

Only the ops of the benchmark's models are known (CNN blocks of torchvision's MobileNetV2/V3,
EfficientNet-B0 and ResNet-18, nn.TransformerEncoder, an MLP); any other op fails with its name.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

aten = torch.ops.aten
# Ops that only pass their first argument on (eval mode) or rename it.
_IDENTITY = {aten.dropout.default, aten.dropout_.default, aten.contiguous.default, aten.clone.default,
             aten.alias.default}
# Ops that only change a tensor's shape, not its element order (PyTorch layout).
_RESHAPE = {aten.view.default, aten.reshape.default, aten.unflatten.int, aten.unsqueeze.default,
            aten.squeeze.dim, aten.flatten.using_ints, aten._unsafe_view.default}
_UNARY = {aten.relu.default: "relu", aten.relu_.default: "relu", aten.sigmoid.default: "sigmoid",
          aten.silu.default: "silu", aten.silu_.default: "silu", aten.hardswish.default: "hardswish",
          aten.hardswish_.default: "hardswish", aten.hardsigmoid.default: "hardsigmoid",
          aten.hardsigmoid_.default: "hardsigmoid", aten.gelu.default: "gelu"}
_BINARY = {aten.add.Tensor: "add", aten.add_.Tensor: "add", aten.mul.Tensor: "mul", aten.mul_.Tensor: "mul"}
_BATCH_NORM = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}


def _is_relu6(node) -> bool:
    if node.target not in (aten.hardtanh.default, aten.hardtanh_.default):
        return False
    lo, hi = (list(node.args[1:]) + [-1.0, 1.0])[:2]
    return (lo, hi) == (0.0, 6.0)


def _activation(node) -> str | None:
    """The fused-activation name of an activation node tf.fused ops take, or None."""
    if node.target in (aten.relu.default, aten.relu_.default):
        return "relu"
    return "relu6" if _is_relu6(node) else None


class _Writer:
    """Collects the op list and the weights (float32, one binary blob)."""

    def __init__(self):
        self.ops, self.weights, self.blob, self.offset = [], {}, [], 0

    def weight(self, name: str, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array, dtype=np.float32)
        self.weights[name] = {"offset": self.offset, "shape": list(array.shape)}
        self.blob.append(array.tobytes())
        self.offset += array.nbytes
        return name


def _shape(node) -> list[int]:
    return [int(d) for d in node.meta["val"].shape]


def export_tfjs(model: torch.nn.Module, args: tuple, stem: Path) -> dict:
    """Writes `stem`.tfjs.json (the op list) and `stem`.tfjs.bin (weights); returns the JSON's dict.
    `args`: the forward's positional example inputs (static shapes)."""
    model = model.eval()
    ep = torch.export.export(model, args)
    sig = ep.graph_signature
    tensors = {**ep.state_dict, **ep.constants}
    consts = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    nodes = [n for n in ep.graph.nodes]
    w = _Writer()
    alias: dict[str, str] = {}   # node name -> the value name that holds it (identities, fused nodes)
    nhwc: set[str] = set()       # values stored NHWC
    fused: set[str] = set()      # nodes already emitted as part of an earlier op
    inputs = []

    def val(node) -> str:
        name = node.name
        while name in alias:
            name = alias[name]
        return name

    def param(node) -> np.ndarray:
        if node is None:
            return None
        if node.op != "placeholder" or node.name not in consts:
            raise NotImplementedError(f"tfjs_export: {node} is used as a weight but is computed, not a parameter")
        return tensors[consts[node.name]].detach().float().numpy()

    def only_user(node):
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    def emit(op: dict, node, layout_nhwc: bool):
        op["out"] = node.name
        w.ops.append(op)
        if layout_nhwc:
            nhwc.add(node.name)

    def to_torch_layout(node) -> str:
        """The value of `node` in PyTorch's layout (an NHWC map is transposed to NCHW)."""
        name = val(node)
        if name not in nhwc:
            return name
        out = f"{name}__nchw"
        if not any(o["out"] == out for o in w.ops):
            w.ops.append({"op": "transpose", "x": name, "perm": [0, 3, 1, 2], "out": out})
        return out

    for node in nodes:
        if node.name in fused:
            continue
        if node.op == "placeholder":
            if node.name in consts:
                continue
            shape = _shape(node)
            inputs.append({"name": node.name, "shape": shape, "nhwc": len(shape) == 4})
            if len(shape) == 4:
                nhwc.add(node.name)
            continue
        if node.op == "output":
            outputs = [to_torch_layout(a) for a in node.args[0]]
            continue
        t, a = node.target, node.args
        if node.op != "call_function":
            raise NotImplementedError(f"tfjs_export: node kind {node.op} ({node}) is not supported")
        if str(t).split(".")[1].endswith("_") and t not in _IDENTITY:
            # in-place ATen op in export's IR: taken as functional, safe only when nothing reads
            # the mutated input afterwards
            if len(a[0].users) > 1:
                raise NotImplementedError(f"tfjs_export: in-place {t} on {a[0]}, which is read again later")
        if t in _IDENTITY:
            alias[node.name] = val(a[0])
        elif t == aten.conv2d.default:
            # conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
            x, weight, bias, stride, padding, dilation, groups = list(a) + [None, 1, 0, 1, 1][len(a) - 2:]
            weight, bias = param(weight), param(bias)
            stride, padding, dilation = ([v] * 2 if isinstance(v, int) else list(v) for v in (stride, padding, dilation))
            if isinstance(padding[0], str):
                raise NotImplementedError(f"tfjs_export: conv2d padding {padding!r} (string) is not supported")
            if val(x) not in nhwc:
                raise NotImplementedError(f"tfjs_export: conv2d on {x}, which is not an NHWC image map")
            out_ch, in_per_group = weight.shape[:2]
            in_ch = in_per_group * groups
            if bias is None:
                bias = np.zeros(out_ch, np.float32)
            end, act = node, "linear"
            bn = only_user(node)
            if bn is not None and bn.target in _BATCH_NORM and bn.args[0] is node:
                # fold: y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta
                gamma, beta, mean, var = (param(bn.args[i]) for i in (1, 2, 3, 4))
                eps = bn.args[7] if bn.target == aten.batch_norm.default else bn.args[6]
                scale = gamma / np.sqrt(var + eps)
                weight = weight * scale[:, None, None, None]
                bias = (bias - mean) * scale + beta
                fused.add(bn.name)
                end = bn
            nxt = only_user(end)
            if nxt is not None and _activation(nxt):
                act = _activation(nxt)
                fused.add(nxt.name)
                end = nxt
            if groups == 1:
                filt, depthwise = weight.transpose(2, 3, 1, 0), False        # [kh, kw, in, out]
            elif groups == in_ch and in_per_group == 1:
                mult = out_ch // in_ch                                       # [kh, kw, in, multiplier]
                filt, depthwise = weight.reshape(in_ch, mult, *weight.shape[2:]).transpose(2, 3, 0, 1), True
            else:
                raise NotImplementedError(f"tfjs_export: grouped conv2d with {groups} groups of {in_per_group} "
                                          "channels (TF.js has regular and depthwise convolutions only)")
            op = {"op": "conv", "x": val(x), "w": w.weight(f"{node.name}.w", filt), "b": w.weight(f"{node.name}.b", bias),
                  "stride": stride, "pad": padding, "dilation": dilation, "depthwise": depthwise, "act": act}
            emit(op, node, True)
            if end is not node:
                alias[end.name] = node.name
        elif t in _BATCH_NORM:
            gamma, beta, mean, var = (param(a[i]) for i in (1, 2, 3, 4))
            eps = a[7] if t == aten.batch_norm.default else a[6]
            if val(a[0]) not in nhwc:
                raise NotImplementedError(f"tfjs_export: batch norm on {a[0]}, which is not an NHWC image map")
            scale = gamma / np.sqrt(var + eps)
            emit({"op": "affine", "x": val(a[0]), "scale": w.weight(f"{node.name}.s", scale),
                  "shift": w.weight(f"{node.name}.t", beta - mean * scale)}, node, True)
        elif t == aten.linear.default:
            weight, bias = param(a[1]), param(a[2] if len(a) > 2 else None)
            if bias is None:
                bias = np.zeros(weight.shape[0], np.float32)
            act, nxt = "linear", only_user(node)
            if nxt is not None and _activation(nxt):
                act = _activation(nxt)
                fused.add(nxt.name)
                alias[nxt.name] = node.name
            emit({"op": "linear", "x": to_torch_layout(a[0]), "w": w.weight(f"{node.name}.w", weight.T),
                  "b": w.weight(f"{node.name}.b", bias), "act": act}, node, False)
        elif t in _UNARY or _is_relu6(node):
            fn = "relu6" if _is_relu6(node) else _UNARY[t]
            if fn == "gelu" and node.kwargs.get("approximate", "none") != "none":
                raise NotImplementedError("tfjs_export: gelu(approximate='tanh') is not supported")
            emit({"op": "unary", "fn": fn, "x": val(a[0])}, node, val(a[0]) in nhwc)
        elif t in _BINARY:
            if len(a) > 2 or node.kwargs.get("alpha", 1) != 1:
                raise NotImplementedError(f"tfjs_export: {t} with alpha is not supported")
            xs = [val(v) for v in a[:2]]
            if any(not isinstance(v, torch.fx.Node) for v in a[:2]):
                raise NotImplementedError(f"tfjs_export: {t} with a Python scalar is not supported")
            # broadcasting lines NHWC maps up only with NHWC maps ([1, C, 1, 1] of an SE block included)
            if len({x in nhwc for x in xs}) > 1:
                raise NotImplementedError(f"tfjs_export: {t} of an NHWC map and a PyTorch-layout tensor")
            emit({"op": "binary", "fn": _BINARY[t], "x": xs[0], "y": xs[1]}, node, any(x in nhwc for x in xs))
        elif t == aten.adaptive_avg_pool2d.default:
            if list(a[1]) != [1, 1] or val(a[0]) not in nhwc:
                raise NotImplementedError(f"tfjs_export: adaptive_avg_pool2d to {a[1]} (only a global pool to 1x1 of an NHWC map)")
            emit({"op": "mean_hw", "x": val(a[0])}, node, True)
        elif t == aten.max_pool2d.default:
            kernel, stride, padding = a[1], (a[2] if len(a) > 2 and a[2] else a[1]), (a[3] if len(a) > 3 else 0)
            if (len(a) > 4 and a[4] not in (1, [1, 1])) or (len(a) > 5 and a[5]):
                raise NotImplementedError("tfjs_export: max_pool2d with dilation or ceil_mode is not supported")
            kernel, stride, padding = ([v] * 2 if isinstance(v, int) else list(v) for v in (kernel, stride, padding))
            emit({"op": "maxpool", "x": val(a[0]), "k": kernel, "stride": stride, "pad": padding}, node, True)
        elif t in _RESHAPE:
            # a 1x1 NHWC map has NCHW's element order already (the flatten after a global pool)
            flat = val(a[0]) in nhwc and _shape(a[0])[2:] == [1, 1]
            emit({"op": "reshape", "x": val(a[0]) if flat else to_torch_layout(a[0]), "shape": _shape(node)}, node, False)
        elif t in (aten.transpose.int, aten.permute.default):
            rank = len(_shape(a[0]))
            if t == aten.permute.default:
                perm = [d % rank for d in a[1]]
            else:
                perm = list(range(rank))
                i, j = a[1] % rank, a[2] % rank
                perm[i], perm[j] = perm[j], perm[i]
            emit({"op": "transpose", "x": to_torch_layout(a[0]), "perm": perm}, node, False)
        elif t == aten.select.int:
            shape = _shape(a[0])
            dim, index = a[1] % len(shape), a[2] % shape[a[1] % len(shape)]
            begin = [0] * len(shape)
            begin[dim] = index
            size = list(shape)
            size[dim] = 1
            emit({"op": "slice", "x": to_torch_layout(a[0]), "begin": begin, "size": size, "shape": _shape(node)}, node, False)
        elif t == aten.scaled_dot_product_attention.default:
            kw = dict(zip(["attn_mask", "dropout_p", "is_causal", "scale"], a[3:]), **node.kwargs)
            if kw.get("attn_mask") is not None or kw.get("is_causal") or kw.get("dropout_p", 0.0):
                raise NotImplementedError("tfjs_export: scaled_dot_product_attention with a mask, causal or dropout")
            scale = kw.get("scale") or 1.0 / math.sqrt(_shape(a[0])[-1])
            emit({"op": "sdpa", "q": val(a[0]), "k": val(a[1]), "v": val(a[2]), "scale": scale}, node, False)
        elif t == aten.layer_norm.default:
            if len(a[1]) != 1:
                raise NotImplementedError("tfjs_export: layer_norm over more than the last dim")
            emit({"op": "layernorm", "x": to_torch_layout(a[0]), "w": w.weight(f"{node.name}.w", param(a[2])),
                  "b": w.weight(f"{node.name}.b", param(a[3])), "eps": a[4] if len(a) > 4 else 1e-5}, node, False)
        else:
            raise NotImplementedError(f"tfjs_export: ATen op {t} ({node.format_node()}) has no TF.js translation; "
                                      "add it to benchmarks/web/tfjs_export.py and tfjs_graph.mjs")
    graph = {"inputs": inputs, "outputs": outputs, "ops": w.ops, "weights": w.weights}
    stem.with_name(f"{stem.name}.tfjs.bin").write_bytes(b"".join(w.blob))
    stem.with_name(f"{stem.name}.tfjs.json").write_text(json.dumps(graph))
    return graph
