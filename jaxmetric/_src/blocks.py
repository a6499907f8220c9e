"""The one loop over blocks of rows, under every ``block_size`` of jaxmetric.

:func:`map_blocks` splits arrays with a leading row axis into blocks of ``block`` rows
(zero-padded to whole blocks), runs ``f`` on each block inside ``lax.map`` and either sums the
per-block outputs (``combine="sum"``: partial sums such as a reduction's numerator and
denominator) or concatenates them back to the rows, padding dropped (``combine="rows"``).
With ``checkpoint=True`` (the default) each block is rematerialised in the backward pass, so
neither pass holds more than one block's temporaries (a ``[block, R]`` similarity block, a
``[block, R, R]`` triplet block). ``lax.map`` rather than a scan with a carry: per-block
outputs need no carry type, which keeps the loop valid under ``shard_map``'s varying-axis
typing.

Padding rows are zeros: ``f`` must be finite on them, and with ``combine="sum"`` must give
zeros there (a weight row of zeros does).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def map_blocks(f, rows, shared=(), *, block: int, combine: str = "sum", checkpoint: bool = True):
    """``f(*row_blocks, *shared)`` over blocks of ``block`` rows of ``rows`` (arrays with the same
    leading dimension, or None, passed through as None), outputs summed over blocks or
    concatenated back to rows (see the module docstring). One block covering every row runs
    ``f`` once, without the loop."""
    if combine not in ("sum", "rows"):
        raise ValueError(f"internal: combine must be 'sum' or 'rows'; got {combine!r}")
    present = [x for x in rows if x is not None]
    n = present[0].shape[0]
    blk = int(max(1, min(block, n)))

    def call(*blocks):
        it = iter(blocks)
        return f(*[None if x is None else next(it) for x in rows], *shared)

    if blk >= n:
        return call(*present)
    nblk = -(-n // blk)
    pad = nblk * blk - n

    def split(x):
        return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((nblk, blk) + x.shape[1:])

    body = jax.checkpoint(lambda xs: call(*xs)) if checkpoint else (lambda xs: call(*xs))
    out = jax.lax.map(body, tuple(split(x) for x in present))
    if combine == "sum":
        return jax.tree_util.tree_map(lambda o: jnp.sum(o, axis=0), out)
    return jax.tree_util.tree_map(lambda o: o.reshape((nblk * blk,) + o.shape[2:])[:n], out)
