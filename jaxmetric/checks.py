"""Opt-in runtime checks of input *values* with :mod:`jax.experimental.checkify`.

Every loss validates shapes, dtypes and options while tracing. A NaN or inf inside the
embeddings is a value, which a traced function cannot inspect without a host round trip, so
that check is opt-in: :func:`checkify_finite` wraps a loss so that non-finite floating inputs
become a checkify error, returned as a value (it works under ``jit``, ``vmap`` and ``grad``
of the wrapped function's output) and raised with ``err.throw()``.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import checkify

__all__ = ["checkify_finite"]


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
    checked, learned parameters and states included. ``errors`` adds checkify's own checks
    (e.g. ``checkify.nan_checks`` for NaNs produced inside ``fn``, ``checkify.index_checks``).
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
        for arg_name, value in _named_arguments(sig, args, kwargs):
            for path, leaf in _float_leaves(value):
                ok = jnp.isfinite(leaf)
                first = jnp.argmin(ok.ravel()) if leaf.size else jnp.zeros((), jnp.int32)
                bad = leaf.ravel()[first] if leaf.size else jnp.zeros((), leaf.dtype)
                checkify.check(
                    jnp.all(ok),
                    f"{fn_name}: `{arg_name}{path}` must be finite (no NaN or inf); got {{bad}} at flat index {{index}} "
                    f"of an array of shape {tuple(leaf.shape)}",
                    bad=bad,
                    index=first,
                )
        return fn(*args, **kwargs)

    return checkify.checkify(checked, errors=checkify.user_checks | frozenset(errors))
