"""The front door of every public function: one wrapper, the decorator :func:`front_door` on
each public function's definition.

Before the function's own validation runs, the wrapper

* converts array inputs of foreign types (torch CPU tensors and anything else exposing
  ``__array__`` or ``__dlpack__``, inside tuples, lists, dicts and masks too) into JAX arrays,
  so every dtype check sees a JAX dtype (torch is never imported; NumPy arrays, Python lists
  and JAX arrays pass unchanged: the validators turn lists into arrays);
* checks that keyword hyperparameters with numeric defaults are scalars (an array would
  broadcast silently against the batch);
* turns Python's "takes 2 positional arguments but 3 were given" for a PML call
  ``loss(embeddings, labels, indices_tuple)`` into a pointer to the jaxmetric idiom;

and, for losses, regularizers and wrappers (``nonfinite=True``), it makes a NaN or inf in any
floating input array give a NaN value (in a keyword hyperparameter with a numeric default, a
NaN only: ``lambdaC=inf`` is a setting): a stop-gradient ``sum(x * 0)`` over the inputs is 0 for
finite inputs (value and gradient unchanged, no NaN ever computed) and NaN otherwise, and is
added to every floating output outside a state object. With ``axis_name`` it is ``psum``-ed,
so one device's NaN makes the loss NaN on every device. Without this, masking, ``max`` and
``where`` inside a loss can drop a NaN row from the value while its gradient is NaN.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
from typing import Any, Callable, TypeVar, overload

import jax
import jax.numpy as jnp
import numpy as np

from jaxmetric._src import collectives, validate
from jaxmetric._src.selections import Selection


def _is_foreign_array(x) -> bool:
    """An array of another library (torch, ...): has ``__array__`` or ``__dlpack__`` but is
    neither a JAX/NumPy array nor something JAX converts itself (``__jax_array__``)."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic, numbers.Number, str, bytes)):
        return False
    if hasattr(x, "__jax_array__"):
        return False
    return hasattr(x, "__array__") or hasattr(x, "__dlpack__")


def _to_jax(x, name: str, fn: str) -> jax.Array:
    """A copy of ``x`` as a JAX array (a copy: the source may be mutated in place later)."""
    try:
        return jnp.array(np.asarray(x))
    except (TypeError, RuntimeError, ValueError) as first:
        # NumPy has no bfloat16: torch refuses .numpy() for it, DLPack carries it.
        try:
            return jnp.array(jnp.from_dlpack(x))
        except Exception:  # noqa: BLE001 -- the first error says more (e.g. "requires grad")
            raise TypeError(
                f"{fn}: `{name}` must be an array; got a {type(x).__name__} that does not convert to one ({first}). "
                "A torch tensor that requires grad needs .detach(); one on a GPU needs .cpu()"
            ) from first


def _convert(value, name: str, fn: str):
    if _is_foreign_array(value):
        return _to_jax(value, name, fn)
    if isinstance(value, (jax.Array, np.ndarray)) or value is None:
        return value
    leaves, tree = jax.tree_util.tree_flatten(value)
    if not any(_is_foreign_array(x) for x in leaves):
        return value
    return jax.tree_util.tree_unflatten(tree, [_to_jax(x, name, fn) if _is_foreign_array(x) else x for x in leaves])


def without_bounds(tree):
    """``tree`` with the range bounds of margin-form TripletMasks removed: ``lo = -inf`` and
    ``hi = inf`` are open ranges, not bad values."""
    def strip(x):
        return x.without_bounds() if isinstance(x, Selection) else x

    return jax.tree_util.tree_map(strip, tree, is_leaf=lambda x: isinstance(x, Selection))


def _float_arrays(tree):
    for leaf in jax.tree_util.tree_leaves(without_bounds(tree)):
        if isinstance(leaf, (jax.Array, np.ndarray)) and jnp.issubdtype(leaf.dtype, jnp.floating):
            yield jnp.asarray(leaf)


def nonfinite_poison(tree, axis_name=None, *, nan_only=()):
    """0 when every floating array in ``tree`` is finite, NaN otherwise (a stop-gradient float32
    scalar; ``psum``-ed over ``axis_name``), or None when ``tree`` holds no floating array.
    ``x * 0`` is NaN exactly for NaN and +-inf entries, and never NaN otherwise. In ``nan_only``
    (hyperparameters, where an infinity can be a setting: ``lambdaC=inf``) only a NaN counts."""
    parts = [jnp.sum(x * 0, dtype=jnp.float32) for x in _float_arrays(tree)]
    parts += [jnp.sum(jnp.where(jnp.isnan(x), x, 0), dtype=jnp.float32) for x in _float_arrays(nan_only)]
    if not parts:
        return None
    total = sum(parts[1:], parts[0])
    total = jax.lax.stop_gradient(total)
    if axis_name is not None:
        total = collectives.psum(total, axis_name)
    return total


def _is_state(x) -> bool:
    return dataclasses.is_dataclass(x) and not isinstance(x, type)


def add_poison(out, poison):
    """``poison`` added to every floating array of ``out`` outside a dataclass (a returned state
    or mask keeps its values: only the loss value reports the bad input)."""
    if poison is None:
        return out

    def add(x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating):
            return x + poison.astype(x.dtype)
        return x

    return jax.tree_util.tree_map(add, out, is_leaf=_is_state)


def _positional_count(sig: inspect.Signature | None):
    """How many positional arguments the signature takes (None: any number)."""
    if sig is None:
        return None
    kinds = [p.kind for p in sig.parameters.values()]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return None
    return sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)


def _looks_mined(x) -> bool:
    """A mined selection as PML passes it: a mask, or an index tuple."""
    return isinstance(x, Selection) or validate.is_index_tuple(x)


def _extra_positional_error(fn: str, sig: inspect.Signature, n: int, extra) -> TypeError:
    """The message for PML's ``loss(embeddings, labels, indices_tuple)``."""
    params = sig.parameters
    names = [p for p, v in params.items() if v.kind in (v.POSITIONAL_ONLY, v.POSITIONAL_OR_KEYWORD)]
    what = type(extra).__name__ if not isinstance(extra, (tuple, list)) else f"{type(extra).__name__} of {len(extra)} index arrays"
    head = f"{fn}: takes {n} positional arguments ({', '.join(names)}) and no `indices_tuple`; got a {what} after them"
    if "mask" in params:
        how = (f"pass the mined pairs as `mask=`: {fn}({', '.join(names)}, mask=miner(embeddings, labels)); "
               "an index tuple becomes a mask with jaxmetric.from_indices(indices_tuple, batch_size)")
    else:
        how = (f"pass the mined mask in the labels slot: {fn}(embeddings, miner(embeddings, labels)); "
               "an index tuple becomes a mask with jaxmetric.from_indices(indices_tuple, batch_size)")
        if "labels" in params:
            how += f"; labels the formula reads go beside the mask as labels=: {fn}(embeddings, mask, labels=labels)"
    return TypeError(f"{head} (PML's third positional argument). In jaxmetric, {how}")


def wrap(fn, *, nonfinite: bool = True, name: str | None = None):
    """``fn`` behind the front door (see the module docstring)."""
    fname = name or fn.__name__
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    params = sig.parameters.values() if sig is not None else ()
    numeric = tuple(
        p.name for p in params
        if p.kind is p.KEYWORD_ONLY and isinstance(p.default, (int, float)) and not isinstance(p.default, bool)
    )
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    max_positional = _positional_count(sig)

    @functools.wraps(fn)
    def public(*args, **kwargs):
        if max_positional is not None and len(args) > max_positional:
            extra = args[max_positional]
            if _looks_mined(extra):
                raise _extra_positional_error(fname, sig, max_positional, extra)
        args = tuple(
            _convert(a, positional[i] if i < len(positional) else f"args[{i}]", fname) for i, a in enumerate(args)
        )
        kwargs = {k: _convert(v, k, fname) for k, v in kwargs.items()}
        for n in numeric:
            shape = getattr(kwargs.get(n), "shape", None)
            if shape is not None and tuple(shape) != ():
                raise ValueError(
                    f"{fname}: `{n}` must be a scalar (an array would broadcast against the batch); got shape {tuple(shape)}"
                )
        out = fn(*args, **kwargs)
        if not nonfinite:
            return out
        data = (args, {k: v for k, v in kwargs.items() if k not in numeric})
        hyper = [v for k, v in kwargs.items() if k in numeric]
        return add_poison(out, nonfinite_poison(data, kwargs.get("axis_name"), nan_only=hyper))

    return public


_F = TypeVar("_F", bound=Callable[..., Any])


@overload
def front_door(fn: _F, *, nonfinite: bool = True) -> _F: ...
@overload
def front_door(fn: None = None, *, nonfinite: bool = True) -> Callable[[_F], _F]: ...
def front_door(fn=None, *, nonfinite: bool = True):
    """Puts a public function behind the front door (see the module docstring), as a decorator:
    ``@front_door`` for losses, regularizers and wrappers (NaN/inf inputs give a NaN value);
    ``@front_door(nonfinite=False)`` for functions that return selections, masks, reductions
    or metrics. Typed to return the function's own type, so type checkers see the real
    signatures."""
    if fn is None:
        return functools.partial(wrap, nonfinite=nonfinite)
    return wrap(fn, nonfinite=nonfinite)
