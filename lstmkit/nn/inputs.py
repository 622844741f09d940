"""Checking the user's input and turning it into the canonical form engines take, and back.

Accepted, as torch.nn: a batched (T, B, I) tensor ((B, T, I) with batch_first), an unbatched
(T, I) tensor, or a PackedSequence; optional initial states. Added: `lengths=` (B,) with a padded
batch, equivalent to packing. Nothing is broadcast: every size, dtype and device must match.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from lstmkit.trace import Trace


@dataclass
class Prepared:
    """The canonical input plus what is needed to give the caller back their own layout."""

    x: Tensor  # (T, B, I) or (B, T, I) with batch_first, in the caller's batch order
    hx: tuple[Tensor, ...]  # each (L*D, B, *)
    lengths: Tensor | None  # (B,) int64 on CPU
    batched: bool
    packed: PackedSequence | None  # the caller's PackedSequence, to pack the output alike
    resets: Tensor | None = None  # (T, B) bool, time-major, on x's device (RecurrentCall's)


def _check_tensor(what: str, t: Tensor, dtype: torch.dtype, device: torch.device) -> None:
    if not t.is_floating_point():  # e.g. token ids: converting the model would not help
        raise ValueError(
            f"{what} must be a floating-point tensor, got {t.dtype}; token ids go through an "
            f"embedding (torch.nn.Embedding) first, other values convert with {what}.to({dtype})"
        )
    if t.dtype != dtype:
        raise ValueError(
            f"{what} dtype ({t.dtype}) does not match weight dtype ({dtype}). "
            f"Convert it: {what}.to({dtype}), or convert the model: model.to({t.dtype})"
        )
    if t.device != device:
        raise ValueError(
            f"{what} is on {t.device} but the weights are on {device}; "
            f"move one of them: {what}.to('{device}') or model.to('{t.device}')"
        )


def _check_lengths(lengths, B: int, T: int) -> Tensor:
    try:
        lengths = torch.as_tensor(lengths)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:  # torch's words name no
        raise TypeError(  # argument ("Could not infer dtype of str", "Overflow when unpacking")
            f"lengths must be a 1-D tensor or a list of {B} ints (one length per sequence), "
            f"got {type(lengths).__name__}: {e}"
        ) from None
    if lengths.dim() != 1 or lengths.numel() != B:
        raise ValueError(
            f"lengths must be a 1-D tensor with one length per sequence: expected shape ({B},), "
            f"got {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must hold integers, got dtype {lengths.dtype}")
    lengths = lengths.to("cpu", torch.int64)
    if B and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(
            f"every length must be in [1, {T}] (the padded sequence length), got "
            f"min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths


_PACK_HINT = (
    "build PackedSequences with torch.nn.utils.rnn.pack_padded_sequence or pack_sequence "
    "rather than by hand"
)


def _describe(t: object, most: int = 16) -> str:
    """A short account of an index tensor for an error message."""
    if not isinstance(t, Tensor):
        return type(t).__name__
    values = t.flatten()[:most].tolist()
    more = ", ..." if t.numel() > most else ""
    return f"{t.dim()}-D {t.dtype} of {t.numel()} elements {values}{more}"


def _check_packed(p: PackedSequence) -> None:
    """A PackedSequence is four tensors that must agree, and nothing in PackedSequence checks
    that they do. Checked before unpacking, which trusts them as pad_packed_sequence does (a
    negative batch size corrupts the heap there, rows past sum(batch_sizes) are dropped silently,
    and indices that are not a permutation and its inverse make more or fewer output rows)."""
    bs = p.batch_sizes
    if not isinstance(bs, Tensor) or bs.dim() != 1 or bs.dtype != torch.int64 or bs.numel() == 0:
        raise ValueError(
            "PackedSequence batch_sizes must be a non-empty 1-D int64 tensor, got "
            f"{_describe(bs)}; " + _PACK_HINT
        )
    sizes = bs.tolist()
    if sizes[-1] < 1 or any(a < b for a, b in zip(sizes, sizes[1:])):
        raise ValueError(
            "PackedSequence batch_sizes must be positive and non-increasing (the number of "
            f"sequences still running at each step), got {sizes}; " + _PACK_HINT
        )
    if sum(sizes) != p.data.size(0):
        raise ValueError(
            f"PackedSequence data has {p.data.size(0)} rows but its batch_sizes sum to "
            f"{sum(sizes)}; they must agree. " + _PACK_HINT
        )
    B = sizes[0]
    perms = {}
    for what in ("sorted_indices", "unsorted_indices"):
        idx = getattr(p, what)
        if idx is None:  # absent: the batch is in sorted order already (the identity)
            continue
        ok = (
            isinstance(idx, Tensor)
            and idx.dim() == 1
            and idx.dtype in (torch.int64, torch.int32)
            and idx.numel() == B
        )
        if ok and idx.device != p.data.device:
            raise ValueError(
                f"PackedSequence {what} is on {idx.device} but its data is on {p.data.device}; "
                "move the whole sequence with packed.to(device)"
            )
        perm = idx.tolist() if ok else None
        if perm is None or sorted(perm) != list(range(B)):
            got = _describe(idx)
            raise ValueError(
                f"PackedSequence {what} must be a permutation of range({B}) (batch_sizes[0] "
                f"sequences), got {got}; " + _PACK_HINT
            )
        perms[what] = perm
    identity = list(range(B))
    sorted_idx = perms.get("sorted_indices", identity)
    unsorted_idx = perms.get("unsorted_indices", identity)
    if any(unsorted_idx[j] != i for i, j in enumerate(sorted_idx)):
        raise ValueError(
            "PackedSequence unsorted_indices must be the inverse permutation of sorted_indices, "
            f"got sorted_indices {sorted_idx} and unsorted_indices {unsorted_idx} (None reads "
            "as the identity); "
            "pass only sorted_indices (PackedSequence computes the inverse) or " + _PACK_HINT
        )


def _check_resets(resets, T: int, B: int, module, batched: bool, lengths, device) -> Tensor:
    """The caller's resets -> (T, B) bool, time-major, on `device`, False past each length (a
    reset after a sequence's end would change its held final state)."""
    if not isinstance(resets, Tensor) or resets.dtype != torch.bool:
        got = resets.dtype if isinstance(resets, Tensor) else type(resets).__name__
        raise TypeError(
            f"resets must be a bool tensor, True where a sequence starts afresh, got {got}; "
            f"convert it with torch.as_tensor(resets, dtype=torch.bool)"
        )
    if not batched:
        want, layout = (T,), "(T,) unbatched"
    elif module.batch_first:
        want, layout = (B, T), "(B, T) with batch_first"
    else:
        want, layout = (T, B), "(T, B)"
    if tuple(resets.shape) != want:
        raise ValueError(
            f"resets must have the input's time and batch shape {want}, {layout} (one flag per "
            f"step and sequence, in the padded layout for a PackedSequence), got "
            f"{tuple(resets.shape)}"
        )
    r = resets.reshape(T, 1) if not batched else (resets.t() if module.batch_first else resets)
    r = r.to(device)
    if lengths is not None:
        r = r & (torch.arange(T, device=device)[:, None] < lengths.to(device)[None, :])
    return r.contiguous()


def prepare(module, input, hx, lengths, resets=None) -> Prepared:
    """Validate and canonicalise. `module` is a RecurrentBase (for sizes, dtype and device)."""
    name = type(module).__name__
    w = module.weight_ih_l0
    packed = None
    if isinstance(input, PackedSequence):
        if lengths is not None:
            raise ValueError("pass either a PackedSequence or lengths=, not both")
        packed = input
        if not isinstance(input.data, Tensor):
            raise TypeError(
                f"PackedSequence data must be a Tensor, got {type(input.data).__name__}"
            )
        _check_tensor("input", input.data, w.dtype, w.device)
        if input.data.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {input.data.dim()}")
        _check_packed(input)
        input, lengths = _unpack(input, module.batch_first)
    elif not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor or a PackedSequence, got {type(input)}")
    elif input.dim() not in (2, 3):
        got = f"{input.dim()}D tensor" if name == "RNN" else f"{input.dim()}D"  # torch's words
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {got} instead")
    if input.size(-1) != module.input_size:
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {module.input_size}, "
            f"got {input.size(-1)}"
        )
    _check_tensor("input", input, w.dtype, w.device)
    batched = input.dim() == 3
    if not batched:
        if lengths is not None:
            raise ValueError("lengths= needs batched 3-D input; unbatched input is one sequence")
        input = input.unsqueeze(0 if module.batch_first else 1)
    B = input.size(0 if module.batch_first else 1)
    T = input.size(1 if module.batch_first else 0)
    if T == 0:  # torch's words; every engine needs at least one step
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    if lengths is not None:
        lengths = _check_lengths(lengths, B, T)
    hx = _prepare_hx(module, hx, batched, B, w)
    if resets is not None:
        resets = _check_resets(resets, T, B, module, batched, lengths, input.device)
    return Prepared(input, hx, lengths, batched, packed, resets)


def split_states(name: str, hx, state_names: tuple[str, ...]) -> tuple[Tensor, ...]:
    """The caller's hx -> one tensor per state, checked for structure only (not shapes): a lone
    Tensor for one state, a tuple / list of tensors for several (as torch.nn takes them)."""
    if len(state_names) == 1:
        if not isinstance(hx, Tensor):
            raise TypeError(f"{name}: hx must be a Tensor, got {type(hx).__name__}")
        return (hx,)
    want = ", ".join(f"{s}_0" for s in state_names)
    if (
        not isinstance(hx, (tuple, list))
        or len(hx) != len(state_names)
        or not all(isinstance(s, Tensor) for s in hx)
    ):
        got = type(hx).__name__
        if isinstance(hx, (tuple, list)):
            got += f" of {[type(s).__name__ for s in hx]}"
        raise TypeError(
            f"{name}: hx must be a tuple ({want}) of {len(state_names)} tensors, got {got}"
        )
    return tuple(hx)


def _prepare_hx(module, hx, batched: bool, B: int, w: Tensor) -> tuple[Tensor, ...]:
    shapes = module.state_shapes(B)
    if hx is None:
        return tuple(torch.zeros(s, dtype=w.dtype, device=w.device) for s in shapes)
    many = len(shapes) > 1
    states = split_states(type(module).__name__, hx, module.cell.state_names)
    want = 3 if batched else 2
    if any(s.dim() != want for s in states):
        dims = ", ".join(f"{s.dim()}-D" for s in states)
        kind = "batched 3-D" if batched else "unbatched 2-D"
        # torch.nn's own sentences, word for word: "(2-D, 2-D) tensors" / "2-D tensor"
        what, got = ("hx and cx", f"({dims}) tensors") if many else ("hx", f"{dims} tensor")
        raise RuntimeError(f"For {kind} input, {what} should also be {want}-D but got {got}")
    if not batched:
        states = tuple(s.unsqueeze(1) for s in states)
    for i, (s, shape) in enumerate(zip(states, shapes)):
        label = f"hidden[{i}]" if many else "hidden"
        if tuple(s.shape) != shape:
            raise RuntimeError(f"Expected {label} size {shape}, got {list(s.shape)}")
        _check_tensor(f"hx[{i}]" if many else "hx", s, w.dtype, w.device)
    return states


def restore_output(module, prep: Prepared, output: Tensor, h_n: tuple[Tensor, ...]):
    """Engine output -> the caller's form: packed back, or unbatched."""
    if prep.packed is not None:
        return _pack_like(prep.packed, output, module.batch_first), h_n
    if not prep.batched:
        output = output.squeeze(0 if module.batch_first else 1)
        h_n = tuple(h.squeeze(1) for h in h_n)
    return output, h_n


def _packed_index(p: PackedSequence) -> tuple[Tensor, Tensor]:
    """Where each row of p.data sits in the padded batch: (t, b) index tensors (N,), b in the
    caller's batch order. Row n of the data is step t of the sorted sequence j: the rows of step
    t come in a block of batch_sizes[t], and sorted sequence j is the caller's sorted_indices[j]."""
    bs = p.batch_sizes  # (T,) on CPU
    t_idx = torch.repeat_interleave(torch.arange(bs.numel()), bs)  # (N,)
    j = torch.arange(t_idx.numel()) - (torch.cumsum(bs, 0) - bs)[t_idx]  # sorted position
    device = p.data.device
    t_idx, j = t_idx.to(device), j.to(device)
    return t_idx, (j if p.sorted_indices is None else p.sorted_indices[j])


def _unpack(p: PackedSequence, batch_first: bool) -> tuple[Tensor, Tensor]:
    """pad_packed_sequence as one differentiable scatter (pad_packed_sequence copies step by
    step, forward and backward): the padded batch in the caller's order, zeros past each length,
    and the lengths (B,)."""
    t_idx, b_idx = _packed_index(p)
    bs = p.batch_sizes
    B, T = int(bs[0]), bs.numel()
    lengths = (bs[None, :] > torch.arange(B)[:, None]).sum(1)  # (B,) in sorted order
    if p.unsorted_indices is not None:
        lengths = lengths[p.unsorted_indices.cpu()]
    shape = (B, T) if batch_first else (T, B)
    padded = p.data.new_zeros(*shape, p.data.shape[-1])
    index = (b_idx, t_idx) if batch_first else (t_idx, b_idx)
    return padded.index_put(index, p.data), lengths


def _pack_like(ref: PackedSequence, padded: Tensor, batch_first: bool):
    """Pack `padded` (caller's batch order) with exactly ref's batch_sizes and indices: one
    gather of the rows _unpack scattered."""
    t_idx, b_idx = _packed_index(ref)
    data = padded[b_idx, t_idx] if batch_first else padded[t_idx, b_idx]
    return PackedSequence(data, ref.batch_sizes, ref.sorted_indices, ref.unsorted_indices)


def restore_trace(module, prep: Prepared, trace: Trace) -> Trace:
    """Canonical (L, D, T, B, *) -> the caller's layout (see lstmkit.trace)."""
    if module.batch_first:
        trace = trace.map(lambda t: t.transpose(2, 3))
    if not prep.batched:
        trace = trace.map(lambda t: t.squeeze(2 if module.batch_first else 3))
    trace.batch_first = module.batch_first
    trace.batched = prep.batched
    trace.lengths = prep.lengths
    return trace
