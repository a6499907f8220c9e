"""The property battery, run for every entry of tests/registry.py.

Per entry, one test (its compilations are shared by all its properties, and it never straddles
two xdist workers) that reports every failing property:

1. ``finite``: value, outputs and gradients (embeddings and learned parameters) are finite for
   adversarial finite float32 inputs -- zero vectors, duplicated embeddings, scales 1e-4 and
   1e4, rows of norms from 1e-6 to 1e4 in one batch, one class, all classes distinct (no
   positive pair), zeros + duplicates + one class, antipodal rows (unit distance 2.0000002 in
   float32, just outside [0, 2]),
   every row masked by ``where`` (which must give 0 with a zero gradient);
2. ``vmap+eager+debug_nans``: a Python loop of eager (op-by-op) calls equals the jitted
   ``vmap`` over a leading axis, input by input (vmap == loop and jit == eager at once, on the
   generic inputs); the eager calls run under ``jax.debug_nans(True)`` on every adversarial
   input, so no intermediate value of the forward or backward pass is NaN;
3. ``single``: a batch of one sample gives a finite value and gradient;
4. ``perm``: the loss is invariant (per-row outputs and selections equivariant) under a
   permutation of the batch, and the gradient permutes with it;
5. ``sliced``: padding rows with ``where=False`` (garbage in them) gives the value and
   gradient of the unpadded batch, and a zero gradient on the padded rows;
6. ``check_grads``: ``jax.test_util.check_grads`` (order 1, reverse mode, float64, eps 1e-6)
   where the loss is smooth (the registry says why where it is not);
7. ``lowp``: bfloat16 and float16 embeddings give a float32 value equal (rtol 2e-5) to the
   float32 value of the same rounded inputs, and within ``lowp_tol`` (default bf16 5e-2,
   fp16 5e-3, relative to max(1, |value|)) of the float32 value of the unrounded inputs;
   gradients come back in the input dtype and are finite, also with a zero row and duplicates
   and with rows of norms from 1e-6 to 1e4;
8. ``retrace``: the jitted functions trace once for all their calls (same shapes):
   ``chex.assert_max_traces(n=1)`` on the vmapped function, a trace count on the float64 one;
9. ``nonfinite``: one NaN, and one inf, in any floating argument (embeddings, logits, learned
   parameters, the reference set ``ref_emb``), and a NaN float hyperparameter, give a
   non-finite value; under ``vmap(axis_name=...)`` one shard's NaN makes every shard's value
   NaN;
10. ``array types``: NumPy arrays, Python lists and torch CPU tensors as arguments give the
    value of JAX arrays, eagerly and under ``jit`` (lists as traced pytrees, torch tensors
    closed over), and so does a PairMask of torch tensors;
11. ``one pair per anchor``: a mask with one pair per anchor by construction
    (``paired_mask(..., other_pairs="ignore")``) is refused while tracing with a message saying
    why, or gives a non-zero value and gradient: never a silent 0.

Cost: per entry four small compilations (the vmapped batch, the unvmapped 5-row and 1-row
batches, the float64 gradient, the list/torch inputs) at XLA optimisation level 0, and eager
passes.
"""
from __future__ import annotations

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxmetric as jm
from registry import B, D, ENTRIES, HOST_METRICS, REGISTRY, Entry

try:
    import torch
except ImportError:  # torch is a test dependency (the PML extra); CI has it
    import os

    if os.environ.get("CI"):
        raise
    torch = None

F32 = jnp.float32
_rng = np.random.default_rng(7)
BASE = _rng.normal(size=(B, D)).astype(np.float32)
LABELS = np.array([0, 1, 0, 2, 1, 2, 3, 0], np.int32)
GARBAGE = (1e3 * _rng.normal(size=(B, D))).astype(np.float32)
PERM = _rng.permutation(B)
N_REAL = 5  # rows kept in the "masked equals sliced" check


# Rows of very different norms in one batch (1e-6 ... 1e4): normalised rows of tiny norm have
# huge gradients, large rows huge distances.
MIXED_SCALES = (BASE * (10.0 ** np.linspace(-6, 4, B, dtype=np.float32))[:, None]).astype(np.float32)


def _adversarial():
    """``[(name, emb, labels, where)]``, all ``[B, D]`` float32."""
    zeros = BASE.copy()
    zeros[[0, 3, 6]] = 0.0
    dups = BASE[[0, 0, 0, 1, 1, 2, 2, 0]].copy()  # duplicates within and across classes
    antipodal = BASE.copy()
    antipodal[4:] = -0.5 * BASE[:4]  # negatives of rows 0-3 (other classes): rounding puts some at 2 + ulp
    ones = np.ones(B, bool)
    return [
        ("zero_vectors", zeros, LABELS, ones),
        ("duplicates", dups, LABELS, ones),
        ("scale_1e-4", BASE * np.float32(1e-4), LABELS, ones),
        ("scale_1e4", BASE * np.float32(1e4), LABELS, ones),
        ("one_class", BASE, np.zeros(B, np.int32), ones),
        ("all_distinct_no_positive_pair", BASE, np.arange(B, dtype=np.int32), ones),
        ("zeros_duplicates_one_class", dups * (np.arange(B) % 3 != 0)[:, None], np.zeros(B, np.int32), ones),
        ("mixed_scales_1e-6_to_1e4", MIXED_SCALES, LABELS, ones),
        ("antipodal", antipodal, LABELS, ones),
        ("all_masked", BASE, LABELS, np.zeros(B, bool)),
    ]


ADVERSARIAL = _adversarial()
MIXED = BASE.copy()
MIXED[6] = 0.0  # a zero vector
MIXED[7] = MIXED[5]  # a duplicate (labels 2 and 0: across classes)
MIXED[4] = MIXED[1]  # a duplicate within class 1


# ----------------------------------------------------------------------------- helpers
def _is_float(x):
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _cast(tree, dtype, only=None):
    """Floating leaves of ``tree`` cast to ``dtype`` (only those of dtype ``only`` if given)."""
    def f(x):
        if _is_float(x) and (only is None or x.dtype == only):
            return jnp.asarray(x).astype(dtype)
        return x

    return jax.tree_util.tree_map(f, tree)


def _value_and_grads(entry: Entry):
    """``f(args, where) -> (out, grads)``; grads w.r.t. ``entry.diff`` (empty for selections)."""
    run = entry.runner()

    def f(args, where):
        kw = {} if where is None else {"where": where}
        if entry.out_kind != "scalar" or not entry.diff:
            out = run(*args, **kw)
            # a TripletMask is compared as its [B, B, B] weights, whatever its compact form
            return (out.to_dense() if isinstance(out, jm.TripletMask) else out), ()

        def g(dargs):
            a = list(args)
            for i, d in zip(entry.diff, dargs):
                a[i] = d
            return run(*a, **kw)

        return jax.value_and_grad(g)(tuple(args[i] for i in entry.diff))

    return f


def _where_arg(entry: Entry, where):
    return jnp.asarray(where) if entry.where is True and where is not None else None


def _items(entry: Entry):
    """The ``B``-row inputs evaluated by one ``jit(vmap)``: ``{name: (emb, labels, where)}``."""
    ones = np.ones(B, bool)
    items = {
        "base": (BASE, LABELS, ones),
        "mixed": (MIXED, LABELS, ones),
        "perm": (BASE[PERM], LABELS[PERM], ones),
    }
    if entry.where is True:
        items["padded"] = (np.concatenate([BASE[:N_REAL], GARBAGE[N_REAL:]]),
                           np.concatenate([LABELS[:N_REAL], np.array([7, 7, 3], np.int32)]), np.arange(B) < N_REAL)
    for name, e, y, w in ADVERSARIAL:
        if entry.where is True or name != "all_masked":
            items[name] = (e, y, w)
    return items


# Optimisation level 0 roughly halves XLA's CPU compile time; these graphs are tiny.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


class Compiled:
    """Two jitted functions per entry. ``main`` is ``jit(vmap(value_and_grad))`` over a stack of
    ``B``-row inputs; it is called twice (two halves of the stack, same shapes) and must trace
    once. ``small`` is the same function, unvmapped, on the first ``N_REAL`` rows and on one
    row. Eager runs (op by op) happen under ``jax.debug_nans(True)``."""

    def __init__(self, entry: Entry):
        self.entry = entry
        self.traces = 0
        self.f = f = _value_and_grads(entry)
        self.items = _items(entry)
        names = list(self.items)
        if len(names) % 2:
            names.append("base")
        half = len(names) // 2
        self.halves = [names[:half], names[half:]]
        built = self.build(*self.items["base"])
        axes = tuple(0 if i in entry.batch else None for i in range(len(built[0])))
        waxis = 0 if entry.where is True else None

        def main(stack):
            self.traces += 1
            return jax.vmap(f, in_axes=(axes, waxis))(*stack)

        # chex counts traces by the function's source: reset it for each entry.
        chex.clear_trace_counter()
        self.main = jax.jit(chex.assert_max_traces(main, n=1), compiler_options=_FAST_COMPILE)
        self.shapes = {}  # the unvmapped shapes that apply: name -> rows
        if entry.where is True and entry.sliced is True:
            self.shapes["sliced"] = N_REAL
        if entry.single is True:
            self.shapes["single"] = 1
        self.small = jax.jit(lambda items: {k: f(*v) for k, v in items.items()}, compiler_options=_FAST_COMPILE)
        self.results = {}

    def build(self, emb, labels, where):
        return self.entry.build(jnp.asarray(emb), jnp.asarray(labels)), _where_arg(self.entry, where)

    def stack(self, names):
        built = [self.build(*self.items[n]) for n in names]
        args = tuple(
            jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[b[0][i] for b in built]) if i in self.entry.batch else built[0][0][i]
            for i in range(len(built[0][0]))
        )
        where = None if built[0][1] is None else jnp.stack([b[1] for b in built])
        return args, where

    def run(self):
        """Both calls of ``main`` and the call of ``small``; ``self.results[name] = (out, grads)``."""
        with jax.debug_nans(True):  # under jit: the outputs
            for names in self.halves:
                batched = self.main(self.stack(names))
                for k, n in enumerate(names):
                    self.results[n] = jax.tree_util.tree_map(lambda x: x[k], batched)
            if self.shapes:
                small = {k: self.build(BASE[:n], LABELS[:n], np.ones(n, bool)) for k, n in self.shapes.items()}
                self.results.update(self.small(small))

    def eager(self, name, dtype=None):
        emb, labels, where = self.items[name]
        if dtype is not None:
            emb = jnp.asarray(emb, dtype)
        with jax.debug_nans(True):
            return self.f(*self.build(emb, labels, where))


def _leaves(tree):
    return [np.asarray(x, np.float64) if _is_float(x) else np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _all_finite(tree):
    return all(np.all(np.isfinite(x)) for x in _leaves(tree) if x.dtype.kind == "f")


def _scale(tree):
    return max([float(np.max(np.abs(x))) for x in _leaves(tree) if x.size and x.dtype.kind == "f"] + [1.0])


def _close(a, b, rtol, what, scale_of=None):
    """Leaves equal within ``rtol`` relative to each leaf and to the largest entry (``atol``)."""
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb), what
    atol = rtol * _scale(b if scale_of is None else scale_of)
    for x, y in zip(la, lb):
        assert x.shape == y.shape, (what, x.shape, y.shape)
        if x.dtype.kind == "b" or y.dtype.kind == "b":
            np.testing.assert_array_equal(x, y, err_msg=what)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=what)


def _grad_rows(entry, grads, rows):
    """Each differentiated argument's gradient, restricted to ``rows`` for batch arguments."""
    return [jax.tree_util.tree_map(lambda x: x[rows], g) if i in entry.batch else g for i, g in zip(entry.diff, grads)]


def _out_rows(entry, out, rows):
    if entry.out_kind == "scalar":
        return out
    if entry.out_kind == "rows":
        return jax.tree_util.tree_map(lambda x: x[rows], out)
    return jax.tree_util.tree_map(lambda x: x[rows][:, rows][..., rows] if x.ndim == 3 else x[rows][:, rows], out)


# ----------------------------------------------------------------------------- properties
def prop_finite(c: Compiled):
    for name, _, _, _ in ADVERSARIAL:
        if name not in c.items:
            continue
        o, g = c.results[name]
        assert _all_finite(o), f"non-finite output on {name}: {o}"
        assert _all_finite(g), f"non-finite gradient on {name}"
        if name == "all_masked":
            assert all(np.all(x == 0) for x in _leaves(o)), f"every row masked must give 0; got {o}"
            assert all(np.all(x == 0) for x in _leaves(g)), "every row masked must give a zero gradient"


# Inputs away from the loss's discontinuities: at zero vectors and exact duplicates, distances
# sit on hinges and ``avg_nonzero`` counts (a zero distance comes out as 0 or 1e-8 depending on
# rounding), so jit and eager may legitimately differ there; those inputs are checked for
# finiteness and NaN-free intermediates only.
GENERIC = ("base", "scale_1e-4", "one_class", "all_distinct_no_positive_pair", "all_masked")


def prop_vmap_eager_debug_nans(c: Compiled):
    """A Python loop of eager (op-by-op) calls equals the jitted vmap, input by input: vmap ==
    loop and jit == eager at once (on the generic inputs). The eager calls run under
    ``jax.debug_nans(True)`` on every adversarial input: no intermediate value of the forward
    or backward pass is NaN."""
    for name in ["base"] + [n for n, _, _, _ in ADVERSARIAL if n in c.items]:
        try:
            res = c.eager(name)
        except FloatingPointError as e:
            raise AssertionError(f"jax.debug_nans: NaN in an intermediate value on input {name!r}: {e}") from e
        assert _all_finite(res), f"non-finite eager value or gradient on input {name!r}"
        if name in GENERIC:
            _close(c.results[name], res, 1e-5, f"jit(vmap) != eager loop on input {name!r}")


def prop_single(c: Compiled):
    o, g = c.results["single"]
    assert _all_finite(o) and _all_finite(g), f"a single sample gives non-finite values: {o}"


def prop_perm(c: Compiled):
    entry = c.entry
    o, g = c.results["base"]
    o_p, g_p = c.results["perm"]
    _close(o_p, entry.permute_out(o, PERM), 1e-5, "not invariant under a permutation of the batch (output)")
    _close(g_p, _grad_rows(entry, g, PERM), 1e-5, "gradient does not follow a permutation of the batch")


def prop_sliced(c: Compiled):
    entry = c.entry
    n = N_REAL
    o_pad, g_pad = c.results["padded"]
    o_sl, g_sl = c.results["sliced"]
    _close(_out_rows(entry, o_pad, slice(0, n)), o_sl, 1e-5, "padded (where=False) != sliced batch (output)")
    _close(_grad_rows(entry, g_pad, slice(0, n)), g_sl, 1e-5, "padded != sliced batch (gradient)")
    for i, gi in zip(entry.diff, g_pad):
        if i in entry.batch:
            assert all(np.all(x[n:] == 0) for x in _leaves(gi)), f"padded rows of argument {i} get a gradient"
    if entry.out_kind != "scalar":
        nonzero = lambda t: sum(float(np.sum(x != 0)) for x in _leaves(t))  # noqa: E731
        assert nonzero(o_pad) == nonzero(_out_rows(entry, o_pad, slice(0, n))), "padded rows are selected"


def prop_grads(c: Compiled):
    """``check_grads`` (order 1, reverse mode, float64). The function handed to it evaluates a
    jitted ``value_and_grad`` and exposes the library's gradient as its VJP, so the finite
    differences and the VJP reuse one compilation."""
    entry = c.entry
    args = _cast(entry.build(jnp.asarray(BASE, jnp.float64), jnp.asarray(LABELS)), jnp.float64)
    run = entry.runner()
    kw = {"where": jnp.ones(B, bool)} if entry.where is True else {}
    traces = []

    def value(dargs):
        traces.append(1)
        a = list(args)
        for i, d in zip(entry.diff, dargs):
            a[i] = d
        return run(*a, **kw)

    vg = jax.jit(jax.value_and_grad(value), compiler_options=_FAST_COMPILE)

    @jax.custom_vjp
    def f(*dargs):
        return vg(dargs)[0]

    def f_fwd(*dargs):
        return vg(dargs)

    def f_bwd(grads, ct):
        return tuple(jax.tree_util.tree_map(lambda x: x * ct, grads))

    f.defvjp(f_fwd, f_bwd)
    check_grads(f, tuple(args[i] for i in entry.diff), order=1, modes=["rev"], eps=1e-6)
    assert len(traces) == 1, f"the float64 value_and_grad retraced ({len(traces)} traces)"


def prop_lowp(c: Compiled):
    entry = c.entry
    o_32 = c.results["base"][0]
    for dt in (jnp.bfloat16, jnp.float16):
        dname = jnp.dtype(dt).name
        for name in ("base", "mixed", "mixed_scales_1e-6_to_1e4"):
            emb, labels, where = c.items[name]
            args, w = c.build(jnp.asarray(emb, dt), labels, where)
            with jax.debug_nans(True):
                o, g = c.f(args, w)
            assert o.dtype == F32, f"{dname} embeddings must give a float32 value; got {o.dtype}"
            for i, gi in zip(entry.diff, g):
                want = {x.dtype for x in jax.tree_util.tree_leaves(args[i])}
                got = {x.dtype for x in jax.tree_util.tree_leaves(gi)}
                assert got == want, f"gradient of argument {i} must have the input dtype {want}; got {got}"
            assert _all_finite(o) and _all_finite(g), f"non-finite {dname} value or gradient on input {name!r}"
            if name == "base":
                # the same rounded inputs upcast to float32 give the same value: the loss upcasts first
                o_up, _ = c.f(_cast(args, F32, only=jnp.dtype(dt)), w)
                _close(o, o_up, 2e-5, f"{dname} value != float32 value of the same rounded inputs")
                tol = entry.lowp_tol[dname]
                assert abs(float(o) - float(o_32)) <= tol * max(1.0, abs(float(o_32))), (
                    f"{dname} value {float(o)} too far from float32 {float(o_32)} (rtol {tol})"
                )


def _float_positions(entry: Entry, args) -> list[int]:
    """Positional arguments holding a floating array (embeddings, logits, parameters, states)."""
    return [i for i, a in enumerate(args) if any(_is_float(x) for x in jax.tree_util.tree_leaves(a))]


def _poke(tree, value):
    """``tree`` with the first entry of its first floating array set to ``value``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    k = next(i for i, x in enumerate(leaves) if _is_float(x))
    leaves[k] = jnp.asarray(leaves[k]).ravel().at[0].set(value).reshape(jnp.shape(leaves[k]))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _takes_keyword(entry: Entry, name: str) -> bool:
    import inspect

    return entry.call is None and name in inspect.signature(entry.fn).parameters


def prop_nonfinite(c: Compiled):
    """NaN / inf in any floating argument, in ``ref_emb`` and on one device: a non-finite value."""
    entry = c.entry
    run = entry.runner()
    base = entry.build(jnp.asarray(BASE), jnp.asarray(LABELS))
    first = lambda out: jax.tree_util.tree_leaves(out)[0]  # noqa: E731 -- the value (states follow)
    for i in _float_positions(entry, base):
        for bad in (jnp.nan, jnp.inf):
            args = list(base)
            args[i] = _poke(args[i], bad)
            v = np.asarray(first(run(*args)), np.float64)
            assert not np.all(np.isfinite(v)), f"{bad} in argument {i} gives the finite value {v}"
    if _takes_keyword(entry, "ref_emb") and entry.labels_arg == 1:
        for bad in (jnp.nan, jnp.inf):
            try:
                v = np.asarray(run(*base, ref_emb=_poke(base[0], bad), ref_labels=base[1]), np.float64)
            except ValueError as e:  # the losses that compare a batch with itself only (as PML)
                assert "`ref_emb` is not supported" in str(e), str(e)
                break
            assert not np.all(np.isfinite(v)), f"{bad} in ref_emb gives the finite value {v}"
    hyper = _float_hyperparameter(entry)
    if hyper is not None:  # a NaN hyperparameter array; an inf one may be a setting (lambdaC=inf)
        v = np.asarray(first(run(*base, **{hyper: jnp.asarray(jnp.nan)})), np.float64)
        assert not np.all(np.isfinite(v)), f"a NaN `{hyper}` gives the finite value {v}"
    if _takes_keyword(entry, "axis_name"):
        # two shards of B/2 rows; a NaN in the second one only
        shard = lambda x: x.reshape((2, B // 2) + x.shape[1:])  # noqa: E731
        args = [jax.tree_util.tree_map(shard, a) if i in entry.batch else a for i, a in enumerate(base)]
        args[0] = args[0].at[1, 0, 0].set(jnp.nan)
        axes = tuple(0 if i in entry.batch else None for i in range(len(args)))
        out = jax.vmap(lambda *a: first(run(*a, axis_name="d")), in_axes=axes, axis_name="d")(*args)
        v = np.asarray(out, np.float64).reshape(2, -1)
        assert not np.any(np.all(np.isfinite(v), axis=1)), f"a NaN on device 1 of 2 leaves a finite value on a device: {v}"


def _float_hyperparameter(entry: Entry):
    """The first keyword hyperparameter with a float default (None: no such keyword)."""
    import inspect

    if entry.call is not None:
        return None
    for p in inspect.signature(entry.fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY and isinstance(p.default, float) and p.name not in entry.static:
            return p.name
    return None


def _convert_args(args, kind):
    """Every array in ``args`` as NumPy, a Python list or a torch tensor; states (dataclasses)
    stay JAX arrays for NumPy and lists (their fields are updated with ``.at``), PRNG keys stay."""
    def one(x):
        if not isinstance(x, jax.Array) or jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        a = np.asarray(x)
        if kind == "numpy":
            return a
        if kind == "list":
            return a.tolist()
        return torch.from_numpy(a.copy())

    is_state = lambda x: dataclasses.is_dataclass(x) and not isinstance(x, type)  # noqa: E731
    if kind == "torch":
        return jax.tree_util.tree_map(one, args)
    return jax.tree_util.tree_map(lambda x: x if is_state(x) else jax.tree_util.tree_map(one, x), args, is_leaf=is_state)


def prop_array_types(c: Compiled):
    entry = c.entry
    run = entry.runner()
    base = entry.build(jnp.asarray(BASE), jnp.asarray(LABELS))
    want = _strip(run(*base))
    kinds = ("numpy", "list") + (("torch",) if torch is not None else ())
    converted = {k: _convert_args(base, k) for k in kinds}
    # a list has no dtype: it equals the JAX array jnp.asarray makes of it (float64 under x64)
    want_list = _strip(run(*jax.tree_util.tree_map(jnp.asarray, converted["list"])))
    for k in kinds:
        _close(_strip(run(*converted[k])), want_list if k == "list" else want, 1e-5, f"{k} inputs != JAX inputs (eager)")
    t_args = converted.get("torch")
    both = jax.jit(lambda la: (run(*la), run(*t_args) if t_args is not None else None), compiler_options=_FAST_COMPILE)
    got_list, got_torch = both(converted["list"])
    _close(_strip(got_list), want_list, 1e-5, "list inputs != JAX inputs (jit)")
    if t_args is not None:
        _close(_strip(got_torch), want, 1e-5, "torch inputs != JAX inputs (jit)")
    if entry.label_kind in ("any", "ids_or_mask") and torch is not None:
        m = jm.pair_mask(jnp.asarray(LABELS))
        tm = jm.PairMask(torch.from_numpy(np.array(m.pos)), torch.from_numpy(np.array(m.neg)))
        _close(_strip(_with_mask(entry, run, base, tm)), _strip(_with_mask(entry, run, base, m)), 1e-5,
               "a PairMask of torch tensors != of JAX arrays")


def _with_mask(entry: Entry, run, args, mask, f=None):
    """``f(run, args)`` (default: the call) with ``mask`` in the labels slot, and the labels as
    ``labels=`` for the losses whose formula reads them beside a mask."""
    args = list(args)
    args[entry.labels_arg] = mask
    f = f or (lambda r, a: r(*a))
    try:
        return f(run, args)
    except ValueError as e:
        if "`labels` is required" not in str(e):
            raise
        return f(functools.partial(run, labels=jnp.asarray(LABELS)), args)


def _strip(out):
    """The comparable part of an output: a TripletMask as its dense weights, states dropped."""
    if isinstance(out, jm.TripletMask):
        return out.to_dense()
    return out


_ONE_PAIR = jm.paired_mask(jnp.asarray([1, 0, 1, 1]), other_pairs="ignore")  # [B, B]: 4 explicit pairs


def prop_one_pair_per_anchor(c: Compiled):
    """A mask with one pair per anchor: refused (saying why), or a non-zero value and gradient."""
    entry = c.entry
    base = entry.build(jnp.asarray(BASE), jnp.asarray(LABELS))
    value_and_grad = lambda r, a: jax.value_and_grad(lambda e: r(e, *a[1:]))(a[0])  # noqa: E731
    try:
        v, g = _with_mask(entry, entry.runner(), base, _ONE_PAIR, value_and_grad)
    except ValueError as e:
        msg = str(e)
        assert msg.startswith(f"{entry.name}:") or msg.split(":")[0] in REGISTRY, msg
        assert "can never select a term" in msg and "got" in msg, msg
        return
    assert float(jnp.abs(v)) > 0 or float(jnp.max(jnp.abs(g))) > 0, (
        "a mask with one pair per anchor gives a silent 0 (value and gradient): refuse it (resolve(..., contrast=True))"
    )


PROPERTIES = {
    "finite": (prop_finite, None),
    "vmap+eager+debug_nans": (prop_vmap_eager_debug_nans, None),
    "single": (prop_single, "single"),
    "perm": (prop_perm, "perm"),
    "sliced": (prop_sliced, "sliced"),
    "check_grads": (prop_grads, "smooth"),
    "lowp": (prop_lowp, "lowp"),
    "nonfinite": (prop_nonfinite, "nonfinite"),
    "array types": (prop_array_types, None),
    "one pair per anchor": (prop_one_pair_per_anchor, "one_pair"),
}


def _applies(entry: Entry, meta):
    if meta is None:
        return True
    if meta == "sliced" and entry.where is not True:
        return False
    if meta == "smooth" and (entry.out_kind != "scalar" or not entry.diff):
        return False
    if meta == "lowp" and entry.out_kind != "scalar":
        return False
    if meta == "one_pair":
        return entry.label_kind in ("any", "ids_or_mask") and entry.out_kind == "scalar"
    return getattr(entry, meta) is True


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_battery(name):
    entry = REGISTRY[name]
    c = Compiled(entry)
    failures = []
    try:
        c.run()
    except FloatingPointError as e:
        pytest.fail(f"{name}: jax.debug_nans: NaN in the jitted outputs: {e}")
    for prop, (check, meta) in PROPERTIES.items():
        if not _applies(entry, meta):
            continue
        try:
            check(c)
        except (AssertionError, FloatingPointError) as e:
            failures.append(f"[{prop}] {type(e).__name__}: {str(e)[:1500]}")
    if c.traces != 1:
        failures.append(f"[retrace] the jitted function traced {c.traces} times for repeated shapes (expected 1)")
    assert not failures, f"{name}:\n" + "\n".join(failures)


def test_every_property_that_does_not_apply_says_why():
    for entry in ENTRIES:
        for field in ("where", "sliced", "smooth", "perm", "single", "lowp", "nonfinite"):
            v = getattr(entry, field)
            assert v is True or (isinstance(v, str) and len(v) > 10), (entry.name, field, v)
        assert set(entry.diff) <= set(range(8)) and set(entry.batch), entry.name
        args = entry.build(jnp.asarray(BASE), jnp.asarray(LABELS))
        for i in entry.batch:  # the batch arguments really have the batch on axis 0
            assert all(x.shape[0] == B for x in jax.tree_util.tree_leaves(args[i])), (entry.name, i)


# ----------------------------------------------------------------------------- host metrics
_HOST_PERM_NA = {
    "evaluation.nmi": "k-means initialisation depends on the row order",
    "evaluation.ami": "k-means initialisation depends on the row order",
}


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # k-means on duplicated points
@pytest.mark.parametrize("name", sorted(HOST_METRICS))
def test_host_metrics_finite_and_permutation_invariant(name):
    fn = HOST_METRICS[name]
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # every query has a relevant reference
    results = []
    for _, e, _, _ in ADVERSARIAL[:4]:
        out = fn(np.asarray(e), labels)
        vals = list(out.values()) if isinstance(out, dict) else [out]
        assert all(np.all(np.isfinite(np.asarray(v, float))) for v in vals), (name, out)
        results.append(out)
    if name not in _HOST_PERM_NA:
        out_p = fn(BASE[PERM], labels[PERM])
        out = fn(BASE, labels)
        assert out_p == pytest.approx(out), name
