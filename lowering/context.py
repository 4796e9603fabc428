"""LoweringContext: lowers the nodes of one partition in graph order (constants lazily, when
something needs their value), folds weight-only expressions into constants, and collects the
Plan. Nothing here recurses through the graph's producers: depth is not limited by Python's
recursion limit."""
from __future__ import annotations

import operator
from typing import Any, Callable

import torch
from torch.fx import Node

from .plan import Addr, Buffer, OutputSpec, Plan, TensorRef, contiguous_strides
from .shapes import TensorSpec
from .state import ConstFn, LoweringState
from .template import replay
from .tracked import holds_tracked, pin
from .registry import REGISTRY, Unsupported, _foldable_target as _foldable, bind, kernel_reason, op_name
from .walk import inputs_first

_UNSET = object()


class LoweringContext:
    """Lowers one partition for one input signature into self.plan. state: what the partition's
    earlier lowerings worked out (lowering/state.py), owned by the caller; vals: every node's
    TensorSpec (or number) for this signature."""

    def __init__(self, state: LoweringState, vals: dict[Node, Any], constant_inputs: set[int],
                 winograd: bool = True, at_largest: Callable[[Any], int] | None = None):
        self.winograd = winograd  # may 3x3 convs run by Winograd (faster, weights 16/9 larger)
        # Export with dynamic dims (torch_wasm_backend/export_dims.py): a file cannot compute a
        # constant from sizes at run time, so a constant made from this plan's sizes is made once at
        # the largest sizes (at_largest(size) -> that size's value there) and read through a view
        # of this plan's shape; the exporter checks each one is such a slice (size_constants).
        self.at_largest = at_largest
        self._lowering: Node | None = None  # the node whose lowering emits records now
        self.size_constants: list[tuple[Buffer, tuple]] = []
        self.state = state
        self.gm = state.gm
        self.vals = vals
        self.plan = Plan()
        self.placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        self.constant_inputs = constant_inputs
        self.plan.constant_inputs = sorted(constant_inputs)
        self.plan.inputs = [None] * len(self.placeholders)
        self._values: dict[Node, Any] = {}
        # Which nodes are constant does not depend on shapes: the answers, the constants that do
        # not depend on sizes (see shared_constant) and the structural keys of nodes are shared by
        # the partition's plans (one cache per set of constant inputs).
        self._folds = state.folds(constant_inputs)
        self._const_fns = self._folds.const_fns
        self._size_const_fns: dict[Node, ConstFn | None] = {}  # folds that use this plan's sizes
        # The last float32 UNARY / BINARY / MAP record, in the form fusion.py needs to merge the
        # next elementwise op into it (fusion.Chain, see fusion.fuse_into_chain).
        self.elementwise_chain = None
        # Weights packed into GEMM panels for this plan, by (structural key, layout)
        # (ops/matmul.py): unrolled RNNs use one transpose per step, packed once.
        self.packed_b: dict[Any, TensorRef] = {}

    # ---- values ------------------------------------------------------------------------------
    def args(self, node: Node) -> dict[str, Any]:
        """node's arguments by name, the schema's defaults filled in (registry.bind; bound once
        per partition)."""
        bound = self.state.bound.get(node)
        if bound is None:
            bound = self.state.bound[node] = bind(node)
        return bound

    def lowered_value(self, arg):
        """arg's value if it is lowered already, else None (never lowers it)."""
        return self._values.get(arg)

    def val(self, arg):
        """The concrete (fake) value of a node for this plan's input signature."""
        return self.vals[arg] if isinstance(arg, Node) else arg

    def value(self, arg):
        """The lowered value of arg: a TensorRef (or tuple of them) for nodes, arg itself otherwise."""
        if isinstance(arg, Node):
            value = self._values.get(arg, _UNSET)
            if value is _UNSET:
                value = self._values[arg] = self._lower(arg)
            return value
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        return arg

    def _lower(self, node: Node):
        concrete = self.vals[node]
        if isinstance(concrete, (int, float, bool)):
            return concrete  # a symbolic size, already evaluated for this signature
        fold = self.const_fn(node)
        if fold is not None and isinstance(concrete, TensorSpec):
            shape, dtype = concrete.shape, concrete.dtype
            if node in self._size_const_fns:
                # Export with dynamic dims computes what it can from sizes with kernels: a folded
                # embedding of arange(seq) would store a [max, d] table, and few folds are slices
                # of their largest value (at_largest); leaves (arange, full) stay folded.
                if self.at_largest is None or kernel_reason(node) is not None:
                    return self.constant(fold, shape, dtype, node.name, per_shape=True, replayable=True)
            else:
                return self.shared_constant((node, shape, dtype),
                                        lambda: self.constant(fold, shape, dtype, node.name))
        if node.op == "placeholder":
            idx = self.placeholders.index(node)
            v = self.vals[node]
            ref = self.new_buffer(tuple(v.shape), v.dtype, node.name)
            self.plan.inputs[idx] = ref
            return ref
        if node.op == "call_function":
            if node.target is operator.getitem:
                parent = self.value(node.args[0])
                item = parent[node.args[1]]
                if item is None:
                    raise Unsupported(f"output {node.args[1]} of {node.args[0].name} is not computed")
                return item
            entry = REGISTRY.get(node.target)
            if entry is None or entry.lower is None:
                raise Unsupported(f"no wasm lowering for {op_name(node.target)}")
            outer, self._lowering = self._lowering, node
            try:
                result = entry.lower(self, node)
            finally:
                self._lowering = outer
            self.plan.aten_ops[op_name(node.target)] += 1
            return result
        raise Unsupported(f"cannot lower {node.op} node {node.name}")

    def const_fn(self, arg) -> ConstFn | None:
        """A function of the partition inputs that computes arg, if arg depends only on constant
        inputs (parameters, buffers, graph constants) and on sizes; None otherwise. Used to fold
        weight expressions (t(weight), batch-norm scale...), static values (arange, masks built
        from ones/tril) and to pre-pack weights at compile time. The producers' answers are found
        first with an explicit stack (no recursion: graphs may be thousands of ops deep)."""
        if not isinstance(arg, Node):
            if isinstance(arg, (list, tuple)):
                fns = [self.const_fn(a) for a in arg]
                if any(f is None for f in fns):
                    return None
                return lambda ins: type(arg)(f(ins) for f in fns)
            return lambda ins: arg
        for node in inputs_first(arg, self._known_const_fn, self._fold_inputs):
            self._const_fn_given_inputs(node)
        return self._size_const_fns[arg] if arg in self._size_const_fns else self._const_fns[arg]

    def _known_const_fn(self, node: Node) -> bool:
        return node in self._size_const_fns or node in self._const_fns

    def _is_size(self, node: Node) -> bool:
        """A number computed from sizes (already evaluated for this plan)."""
        return (isinstance(self.vals.get(node), (int, float, bool))
                and not isinstance(node.meta.get("val"), torch.Tensor))

    def _fold_inputs(self, node: Node) -> list[Node]:
        """The nodes whose const_fn node's own depends on."""
        if self._is_size(node) or node.op != "call_function":
            return []
        if node.target is operator.getitem or _foldable(node.target):
            return node.all_input_nodes
        return []

    def _const_fn_given_inputs(self, arg: Node) -> None:
        """Records const_fn(arg), with the const_fn of its inputs already known."""
        fn: ConstFn | None = None
        per_shape = False  # the value depends on this plan's sizes: not shared across plans
        if self._is_size(arg):
            fn, per_shape = self.at_call_sizes(self.vals[arg]), True
        elif arg.op == "placeholder":
            idx = self.placeholders.index(arg)
            if idx in self.constant_inputs:
                fn = lambda ins: ins[idx]
        elif arg.op == "get_attr":
            attr = getattr(self.gm, arg.target)
            fn = lambda ins: attr
        elif arg.op == "call_function" and (arg.target is operator.getitem or _foldable(arg.target)):
            arg_fns = [self._fold_tree(a) for a in arg.args]
            kw_fns = {k: self._fold_tree(v) for k, v in arg.kwargs.items()}
            if not any(_holds_none(f) for f in [*arg_fns, *kw_fns.values()]):
                per_shape = any(self._depends_on_sizes(a) for a in [*arg.args, *arg.kwargs.values()])
                fn = _Fold(arg.target, arg_fns, kw_fns)
        (self._size_const_fns if per_shape else self._const_fns)[arg] = fn

    def _fold_tree(self, a):
        """a with each node replaced by its (known) const_fn and each other leaf by _Literal(leaf)."""
        if isinstance(a, Node):
            return self._size_const_fns[a] if a in self._size_const_fns else self._const_fns[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._fold_tree(x) for x in a)
        return _Literal(a)

    def at_call_sizes(self, value) -> ConstFn:
        """A function of a call's inputs giving value at that call's sizes: value itself, unless it
        holds tracked sizes (a plan template's lowering), which are then re-evaluated from the
        inputs. Constants made from sizes (arange(t), zeros_like(x)) use it in their make
        functions, so a template can replay them at other sizes."""
        if not holds_tracked(value):
            return lambda ins: value
        specs = self.state.specs
        at_symbols = replay(value, len(specs.symbols))
        return lambda ins: at_symbols(*specs.symbol_values(ins))

    def structural_key(self, arg):
        """A hashable description of how a constant-foldable value is computed (op, arguments,
        down to input indices): equal keys give equal values. Unrolled RNNs compute the same
        weight transpose once per time step; this lets them share one packed copy. A node's key
        is a small int naming (op, its arguments' keys), interned per partition, so keys stay
        flat however deep the graph is (producers are keyed first, with an explicit stack)."""
        if isinstance(arg, (list, tuple)):
            return tuple(self.structural_key(a) for a in arg)
        if not isinstance(arg, Node):
            return ("lit", repr(arg))
        keys = self._folds.structural_keys
        leaves = ("placeholder", "get_attr")
        for node in inputs_first(arg, keys.__contains__,
                                 lambda n: [] if n.op in leaves else n.all_input_nodes):
            if node.op == "placeholder":
                described = ("in", self.placeholders.index(node))
            elif node.op == "get_attr":
                described = ("attr", node.target)
            else:
                described = (str(node.target), self.structural_key(tuple(node.args)),
                             tuple(sorted((k, self.structural_key(v)) for k, v in node.kwargs.items())))
            interned = self._folds.interned_keys
            keys[node] = interned.setdefault(described, len(interned))
        return keys[arg]

    def size_dependent(self, arg) -> bool:
        """Whether a folded value uses this plan's sizes (call after const_fn(arg))."""
        return isinstance(arg, Node) and arg in self._size_const_fns

    def _depends_on_sizes(self, a) -> bool:
        if isinstance(a, (list, tuple)):
            return any(self._depends_on_sizes(x) for x in a)
        return isinstance(a, Node) and a in self._size_const_fns

    # ---- buffers -----------------------------------------------------------------------------
    def new_buffer(self, shape, dtype=torch.float32, name="") -> TensorRef:
        shape = tuple(s if isinstance(s, int) else int(s) for s in shape)  # (keeps tracked sizes)
        numel = 1
        for s in shape:
            numel *= s
        itemsize = dtype.itemsize
        return TensorRef(Buffer(numel * itemsize, name=name), shape, contiguous_strides(shape), 0, dtype)

    def out_for(self, node: Node) -> TensorRef:
        v = self.vals[node]
        return self.new_buffer(tuple(v.shape), v.dtype, node.name)

    def constant(self, make: ConstFn, shape, dtype=torch.float32, name="", per_shape=False,
                 replayable=False) -> TensorRef:
        """A buffer uploaded once (and again when a parameter it derives from changes).

        Constants that do not depend on sizes are shared by the partition's plans, by name: the
        name carries dtype and shape, so equal names mean equal values. per_shape: the value
        depends on this plan's sizes (arange(t), an index table); the runtime keeps it with the
        plan. replayable: make computes it from the call's inputs alone (sizes included), so a
        plan template (lowering/template.py) may reuse it at other sizes; any other per-shape
        constant pins the template to this plan's sizes."""
        shape = tuple(s if isinstance(s, int) else int(s) for s in shape)  # (keeps tracked sizes)
        dtype_name = str(dtype).replace("torch.", "")
        if per_shape and self.at_largest is not None:
            return self._constant_at_largest(make, shape, dtype, f"{name}:{dtype_name}", replayable)
        if per_shape and not replayable:
            pin(f"constant {name}, computed in Python from this plan's sizes")
        elif not per_shape and holds_tracked(shape):
            pin(f"constant {name}, shared by the plans but shaped by this plan's sizes")
        name = f"{name}:{dtype_name}" + ("" if per_shape else f"{list(shape)}")

        def make_contiguous(ins):
            t = torch.as_tensor(make(ins), dtype=dtype).detach()
            # (A replayable value already has its node's shape, at whatever size it is made for.)
            return (t if replayable else t.reshape(shape)).contiguous()

        numel = 1
        for s in shape:
            numel *= s
        buf = Buffer(numel * dtype.itemsize, make=make_contiguous, name=name, per_shape=per_shape)
        self.plan.constants.append(buf)
        return TensorRef(buf, shape, contiguous_strides(shape), 0, dtype)

    def _constant_at_largest(self, make: ConstFn, shape, dtype, name: str, replayable: bool) -> TensorRef:
        """A constant made from sizes, for export with dynamic dims: made at the largest sizes and
        viewed with this plan's shape and the largest shape's strides (see __init__)."""
        if not replayable:
            pin(f"constant {name}, computed in Python from this plan's sizes")
        largest = tuple(self.at_largest(s) for s in shape)

        def make_largest(ins):  # ins: the inputs at their largest sizes
            return torch.as_tensor(make(ins), dtype=dtype).detach().contiguous()

        numel = 1
        for s in largest:
            numel *= s
        buf = Buffer(numel * dtype.itemsize, make=make_largest, name=f"{name}{list(largest)}")
        self.plan.constants.append(buf)
        self.size_constants.append((buf, shape))
        return TensorRef(buf, shape, contiguous_strides(largest), 0, dtype)

    def shared_constant(self, key, create: Callable[[], TensorRef]) -> TensorRef:
        """The constant create() makes (with self.constant), for a value that does not depend on
        this plan's sizes: made by the first plan that needs it and reused by the partition's later
        plans (key: what determines the value, shape and dtype included), so a new input signature
        does not rebuild the weights' constants. Call once per key and plan."""
        shared = self._folds.constants
        ref = shared.get(key)
        if ref is None:
            ref = shared[key] = create()
        else:
            self.plan.constants.append(ref.buffer)
        return ref

    def scalar(self, value, dtype: torch.dtype = torch.float32) -> TensorRef:
        """A 0-d constant holding value (float32 unless dtype says otherwise)."""
        if holds_tracked(value):  # a size used as a number (x * x.shape[0]): made at each call's sizes
            at_call_sizes = self.at_call_sizes(value)
            return self.constant(lambda ins: torch.tensor(at_call_sizes(ins), dtype=dtype), (), dtype,
                                 "scalar_from_sizes", per_shape=True, replayable=True)
        if dtype == torch.float32:
            value = float(value)
        return self.constant(lambda ins: torch.tensor(value, dtype=dtype), (), dtype, f"scalar_{value!r}")

    def emit(self, kernel: str, /, flops: int = 0, **args) -> None:
        """Appends one kernel record; args are the kernel's ABI fields (Addr for pointers)."""
        self.plan.records.append((kernel, args))
        self.plan.record_nodes.append(self._lowering)
        self.plan.flops += flops

    def drop_constant(self, arg) -> None:
        """Forgets the constant holding arg's value after a fold replaced its only use (so it is
        not uploaded). Kept if arg has other users, which may still need it."""
        ref = self._values.get(arg) if isinstance(arg, Node) else None
        if ref is None or len(arg.users) != 1 or not ref.buffer.is_constant:
            return
        del self._values[arg]
        self.plan.constants = [b for b in self.plan.constants if b is not ref.buffer]

    # ---- driver ------------------------------------------------------------------------------
    def lower_graph(self) -> None:
        """Lowers the partition: its compute nodes in graph (topological) order, so that every
        ctx.value(arg) a lowering asks for finds arg done, or a constant, a placeholder or a size
        (lowered on the spot without going further up the graph): no recursion through the
        producers, however deep the graph. Constant-foldable nodes and sizes stay lazy: they
        become a constant (or a number) only if some lowering asks for their value (a folded or
        packed weight does not)."""
        for node in self.gm.graph.nodes:
            if node.op == "call_function" and node.target is not operator.getitem and not self._is_size(node) \
                    and node not in self._values and self.const_fn(node) is None:
                self.value(node)
            elif node.op == "output":
                self.set_outputs(node)

    # ---- finish ------------------------------------------------------------------------------
    def set_outputs(self, output_node: Node) -> None:
        result = output_node.args[0]
        for arg in (result if isinstance(result, (list, tuple)) else [result]):
            ref = self.value(arg)
            if not isinstance(ref, TensorRef):
                raise Unsupported(f"partition output {arg} is not a tensor")
            v = self.vals[arg]
            self.plan.outputs.append(OutputSpec(ref, tuple(v.shape), tuple(v.stride())))


class _Literal:
    """A constant argument of a folded op (an int, a dtype, None...), as a function of the inputs."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __call__(self, ins):
        return self.value


class _Fold:
    """The const_fn of a foldable op node: its target applied to its arguments' values (args and
    kwargs hold the arguments' const_fns, in lists as the node has them). Calling it evaluates the
    folds it depends on in dependency order with an explicit stack (a weight expression may be
    thousands of ops deep), each once per call."""

    def __init__(self, target, args: list, kwargs: dict):
        self.target, self.args, self.kwargs = target, args, kwargs
        self._inputs = [f for f in _leaves([args, list(kwargs.values())]) if isinstance(f, _Fold)]

    def __call__(self, ins):
        values: dict[_Fold, Any] = {}
        for fold in inputs_first(self, values.__contains__, lambda f: f._inputs):
            values[fold] = fold._apply(ins, values)
        return values[self]

    def _apply(self, ins, values: dict):
        def resolve(f):
            if isinstance(f, _Fold):
                return values[f]
            if isinstance(f, (list, tuple)):
                return type(f)(resolve(x) for x in f)
            return f(ins)
        with torch.no_grad():
            return self.target(*[resolve(f) for f in self.args], **{k: resolve(f) for k, f in self.kwargs.items()})


def _leaves(tree):
    """The non-list items of nested lists and tuples."""
    if isinstance(tree, (list, tuple)):
        for x in tree:
            yield from _leaves(x)
    else:
        yield tree


def _holds_none(tree) -> bool:
    return any(f is None for f in _leaves(tree))


def addr(ref: TensorRef | None, extra_elements: int = 0):
    """The kernel PTR for ref (0 = absent)."""
    return 0 if ref is None else ref.addr(extra_elements)


__all__ = ["LoweringContext", "addr", "Addr"]
