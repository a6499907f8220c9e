"""Type aliases of the public signatures (for type checkers and readers; nothing at run time
depends on them)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Hashable, Union

import jax
from jax.typing import ArrayLike, DTypeLike

if TYPE_CHECKING:
    from jaxmetric.masks import PairMask, TripletMask
    from jaxmetric.reduce import Reduction

Array = jax.Array
#: A float hyperparameter: a Python number or a (possibly traced) scalar array.
Scalar = Union[float, jax.Array]
#: The name of a mapped axis (``pmap`` / ``shard_map`` / ``vmap(axis_name=...)``).
AxisName = Hashable
#: Class ids ``[B]``, multi-hot labels ``[B, C]``, or a typed mask.
LabelsOrMask = Union[ArrayLike, "PairMask", "TripletMask"]
#: ``"mean"``, ``"sum"``, ``"avg_nonzero"``, ``"none"``, a reduction object or a callable.
ReductionLike = Union[str, "Reduction", Callable[..., jax.Array]]

__all__ = ["Array", "ArrayLike", "AxisName", "DTypeLike", "LabelsOrMask", "ReductionLike", "Scalar"]
