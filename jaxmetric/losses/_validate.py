"""Static argument checks shared by the listwise, histogram, manifold and VICReg losses."""
from __future__ import annotations

import numbers


def check_static_int(value, name: str, fn: str, minimum: int = 1) -> int:
    """A Python int ``>= minimum`` (a structural option: it fixes array shapes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: `{name}` must be a Python int (it fixes array shapes); got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{fn}: `{name}` must be >= {minimum}; got {value!r}")
    return int(value)


def check_block_size(value, fn: str):
    return None if value is None else check_static_int(value, "block_size", fn)


def reject_ref(fn: str, ref_emb, ref_labels, ref_where) -> None:
    """PML's ``ref_not_supported``: this loss compares a batch with itself only."""
    for name, x in (("ref_emb", ref_emb), ("ref_labels", ref_labels), ("ref_where", ref_where)):
        if x is not None:
            shape = getattr(x, "shape", None)
            got = f"shape {tuple(shape)}" if shape is not None else type(x).__name__
            raise ValueError(f"{fn}: `{name}` is not supported by this loss (PML raises too); expected None, got {got}")


def is_concrete_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)
