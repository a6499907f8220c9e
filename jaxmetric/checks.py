"""Opt-in runtime checks of input *values* with :mod:`jax.experimental.checkify`.

Every loss validates shapes, dtypes and options while tracing. A NaN or inf inside the
embeddings is a value, which a traced function cannot inspect without a host round trip: the
loss then returns NaN (every public loss, regularizer and wrapper does; a finite value is never
computed over a bad input), which says *that* something is wrong. :func:`checkify_finite` says
*where*: it wraps a loss so that non-finite floating inputs (and out-of-range traced indices
given to :func:`jaxmetric.from_indices`) become a checkify error naming the argument, returned
as a value (it works under ``jit``, ``vmap`` and ``grad`` of the wrapped function's output) and
raised with ``err.throw()``.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from jaxmetric._src.front_door import without_bounds

__all__ = ["checkify_finite"]

# Set while a function wrapped by checkify_finite is traced: jaxmetric.from_indices then adds
# checkify checks of its traced indices (outside, a traced index cannot be checked at all).
_INDEX_CHECKS = contextvars.ContextVar("jaxmetric_index_checks", default=False)


def _check_all(ok: jax.Array, values: jax.Array, message: str) -> None:
    """A checkify error ``message`` unless every entry of ``ok`` holds; ``{bad}`` and
    ``{index}`` in it are the first failing entry of ``values`` and its flat index."""
    ok, values = ok.ravel(), values.ravel()
    first = jnp.argmin(ok) if ok.size else jnp.zeros((), jnp.int32)
    bad = values[first] if ok.size else jnp.zeros((), values.dtype)
    checkify.check(jnp.all(ok), message, bad=bad, index=first)


def check_indices(ok: jax.Array, indices: jax.Array, name: str, bound: int, bound_name: str, fn: str) -> None:
    """Inside :func:`checkify_finite`: a checkify error unless every entry of ``ok`` holds
    (traced ``indices`` in ``[0, bound)`` or -1). Elsewhere: nothing (the caller poisons)."""
    if _INDEX_CHECKS.get():
        _check_all(ok, indices, f"{fn}: `{name}` must hold indices in [0, {bound}) or -1 (padding); got {{bad}} at "
                   f"position {{index}} ({bound_name} = {bound})")


def _float_leaves(value: Any):
    """``(path suffix, array)`` for every floating leaf of ``value`` (arrays, Python floats)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(value)
    for path, leaf in leaves:
        if isinstance(leaf, float) or (hasattr(leaf, "dtype") and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)):
            yield jax.tree_util.keystr(path), jnp.asarray(leaf)


def _named_arguments(sig: inspect.Signature | None, args, kwargs):
    if sig is not None:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            bound = None
        if bound is not None:
            for name, value in bound.arguments.items():
                kind = sig.parameters[name].kind
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    yield from ((f"{name}[{i}]", v) for i, v in enumerate(value))
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    yield from value.items()
                else:
                    yield name, value
            return
    yield from ((f"args[{i}]", v) for i, v in enumerate(args))
    yield from kwargs.items()


def checkify_finite(fn: Callable, *, errors: frozenset = frozenset(), name: str | None = None) -> Callable:
    """Wraps ``fn`` so that NaN or inf in any floating input is a checkify error.

    Returns ``checked(*args, **kwargs) -> (err, out)``, the :func:`jax.experimental.checkify.checkify`
    convention: ``out`` is ``fn``'s result and ``err.throw()`` raises
    ``checkify.JaxRuntimeError`` naming the function, the argument (with its pytree path) and
    the first non-finite value, e.g. ``"contrastive_loss: `embeddings` must be finite (no NaN
    or inf); got nan at flat index 5"``. ``err.get()`` returns the message or None.

    Every floating array (and Python float) among the positional and keyword arguments is
    checked, learned parameters and states included (not the open range bounds ``lo``/``hi``
    of a margin-form TripletMask), and so are the traced indices of every
    :func:`jaxmetric.from_indices` call made inside ``fn`` (each in ``[0, batch_size)`` or
    -1): ``err.get()`` then names the tuple element, the index and the size. ``errors`` adds
    checkify's own checks (e.g. ``checkify.nan_checks`` for NaNs produced inside ``fn``,
    ``checkify.index_checks``).
    The wrapped function can be jitted: ``jax.jit(checkify_finite(loss))``.

    Example::

        checked = jax.jit(jaxmetric.checks.checkify_finite(jaxmetric.circle_loss))
        err, loss = checked(embeddings, labels)
        err.throw()  # raises if embeddings held a NaN or inf
    """
    if not callable(fn):
        raise TypeError(f"checkify_finite: `fn` must be callable; got {type(fn).__name__}")
    fn_name = name or getattr(fn, "__name__", None) or type(fn).__name__
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        token = _INDEX_CHECKS.set(True)
        try:
            return _checked(*args, **kwargs)
        finally:
            _INDEX_CHECKS.reset(token)

    def _checked(*args, **kwargs):
        for arg_name, value in _named_arguments(sig, args, kwargs):
            for path, leaf in _float_leaves(without_bounds(value)):
                _check_all(jnp.isfinite(leaf), leaf, f"{fn_name}: `{arg_name}{path}` must be finite (no NaN or inf); got "
                           f"{{bad}} at flat index {{index}} of an array of shape {tuple(leaf.shape)}")
        return fn(*args, **kwargs)

    return checkify.checkify(checked, errors=checkify.user_checks | frozenset(errors))
