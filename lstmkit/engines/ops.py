"""What turns an engine's kernels into PyTorch operators that compile, export and torch.func see.

The pattern (used by lstmkit.engines.fused_ops):

1. The forward and the backward of one layer-direction are each a `torch.library.custom_op` with
   a named schema and a fake (meta) implementation giving the output shapes. torch.compile and
   torch.export then treat them as single opaque nodes: no graph break, no Python loop traced.
2. An autograd.Function in the `setup_context` style connects the two. Custom ops' own autograd
   registration is not enough here: in torch 2.13 it builds an old-style Function that
   torch.func.grad / jacrev refuse ("must override the setup_context staticmethod"). The
   forward op also gets that registration (`register_autograd`), so that a graph exported by
   torch.export, which calls the op directly, can still be trained.
3. vmap (needed by jacrev, which vmaps the backward) runs the op once per batch entry
   (`loop_vmap`): correct for any op, not fast.
4. The backward op runs under no_grad and its results pass through `no_double_backward`, so a
   second differentiation raises a clear error instead of silently dropping second-order terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def schema_names(op) -> tuple[str, ...]:
    """The argument names of a custom op, in schema order (the op's signature is the interface)."""
    return tuple(a.name for a in op._opoverload._schema.arguments)


def loop_vmap(op) -> Callable:
    """A vmap rule for `op` that calls it once per batch entry and stacks the results (dim 0)."""

    def rule(info, in_dims, *args):
        results = []
        for b in range(info.batch_size):
            sliced = [
                a if d is None or not isinstance(a, Tensor) else a.select(d, b)
                for a, d in zip(args, in_dims)
            ]
            results.append(op(*sliced))
        stacked = tuple(torch.stack([r[k] for r in results]) for k in range(len(results[0])))
        return stacked, (0,) * len(stacked)

    return rule


class _NoDoubleBackward(torch.autograd.Function):
    """Identity whose backward refuses: marks a first-order gradient as not differentiable."""

    generate_vmap_rule = True

    @staticmethod
    def forward(engine: str, anchor: Tensor, *grads: Tensor | None):
        return tuple(None if g is None else g.clone() for g in grads)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.engine = inputs[0]

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(
            f"the {ctx.engine} engine has no double backward (differentiating its gradients "
            "would silently drop second-order terms); build the layer with engine='reference' "
            "for higher-order gradients"
        )


def no_double_backward(
    engine: str, anchor: Tensor, grads: Sequence[Tensor | None]
) -> tuple[Tensor | None, ...]:
    """`grads` unchanged, but differentiating them again raises (only when a graph is being
    built: create_graph=True or a torch.func transform; otherwise they pass as they are).
    `anchor` is a saved output of the forward: it ties the gradients into the graph (they were
    computed under no_grad) so that the second differentiation reaches this node."""
    if not torch.is_grad_enabled():
        return tuple(grads)
    return _NoDoubleBackward.apply(engine, anchor, *grads)


def unaliased(outputs: Sequence[Tensor], inputs: Sequence) -> tuple[Tensor, ...]:
    """`outputs` with any that shares memory with an input or an earlier output cloned (an
    operator's outputs may not alias; the engines' code returns views where it can)."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, Tensor) and t.numel()}
    result = []
    for t in outputs:
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        if ptr is not None:
            seen.add(ptr)
        result.append(t)
    return tuple(result)


def autograd_wrapper(args) -> bool:
    """Call the operators through their autograd.Function, except under torch.compile when no
    gradient is wanted (grad mode off, or no tensor argument requires grad): dynamo cannot
    inline the wrapper there, and nothing needs it. Everywhere else one path, because
    jit.trace's check re-traces without grad and wants the same graph."""
    if not torch.compiler.is_compiling():
        return True
    wanted = any(isinstance(a, Tensor) and a.requires_grad for a in args)
    return torch.is_grad_enabled() and wanted


def present(x: Tensor | None, like: Tensor) -> Tensor:
    """An op output that may be absent: a 0-element placeholder of `like`'s dtype and device
    (custom ops cannot return None, nor one output aliasing another)."""
    return like.new_empty(0) if x is None else x


def absent(x: Tensor) -> Tensor | None:
    """Back from `present`: None for a placeholder."""
    return None if x.dim() == 1 and x.numel() == 0 else x
