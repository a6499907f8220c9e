"""The base of the two selection types (:class:`~jaxmetric.PairMask`,
:class:`~jaxmetric.TripletMask`, defined in :mod:`jaxmetric.masks`), below every other module:
validation and the front door recognise a selection by this base without importing the
public constructors of :mod:`jaxmetric.masks`, which build on them."""
from __future__ import annotations


class Selection:
    """A static-shape selection of pairs or triplets (a pytree dataclass)."""

    __slots__ = ()

    def without_bounds(self) -> "Selection":
        """The selection without range bounds that are open ranges rather than values (the
        front door's non-finite check skips them); itself for most selections."""
        return self
