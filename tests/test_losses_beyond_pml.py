"""CLIP, SigLIP, MultiSupCon, DCL/DCLW and Barlow Twins against independent NumPy float64
implementations written from the papers; gradients against central finite differences."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm

RTOL, ATOL = 1e-6, 1e-9


def close(a, b, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------- NumPy references (float64)


def _unit(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _lse(v):
    m = np.max(v)
    return m + np.log(np.sum(np.exp(v - m)))


def np_clip(x, y, log_temperature, max_logit_scale=100.0):
    x, y = _unit(x), _unit(y)
    scale = min(np.exp(-log_temperature), max_logit_scale)
    s = scale * x @ y.T
    n = len(x)
    i2t = [_lse(s[i]) - s[i, i] for i in range(n)]
    t2i = [_lse(s[:, i]) - s[i, i] for i in range(n)]
    return 0.5 * (np.mean(i2t) + np.mean(t2i))


def np_siglip(x, y, t_prime, bias):
    x, y = _unit(x), _unit(y)
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            logit = np.exp(t_prime) * x[i] @ y[j] + bias
            total += np.logaddexp(0.0, -z * logit)  # -log sigmoid(z * logit)
    return total / n


def np_jaccard(a, b):
    a, b = set(np.flatnonzero(a)), set(np.flatnonzero(b))
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def np_multi_supcon(emb, labels, temperature=0.1, threshold=0.5, ref=None, ref_labels=None):
    same = ref is None
    ref, ref_labels = (emb, labels) if same else (ref, ref_labels)
    e, r = _unit(emb), _unit(ref)
    out = []
    for i in range(len(e)):
        others = [j for j in range(len(r)) if not (same and j == i)]
        logits = np.array([e[i] @ r[j] / temperature for j in others])
        lse = _lse(logits)
        pos = [(k, np_jaccard(labels[i], ref_labels[j])) for k, j in enumerate(others)
               if np_jaccard(labels[i], ref_labels[j]) >= threshold]
        out.append(-sum(s * (logits[k] - lse) for k, s in pos) / len(pos) if pos else 0.0)
    out = np.array(out)
    nz = out[out > 0]
    return nz.mean() if len(nz) else 0.0


def np_dcl(x, y, temperature=0.1, sigma=None):
    views = [_unit(x), _unit(y)]
    n = len(x)
    if sigma is None:
        w = np.ones(n)
    else:
        e = np.exp(np.sum(views[0] * views[1], axis=1) / sigma)
        w = 2.0 - e / e.mean()
    terms = []
    for k in range(2):
        for i in range(n):
            zi = views[k][i]
            pos = w[i] * zi @ views[1 - k][i] / temperature
            negs = [zi @ views[l][j] / temperature for l in range(2) for j in range(n) if j != i]
            terms.append(-pos + _lse(np.array(negs)))
    return np.mean(terms)


def np_barlow(x, y, lambd=5e-3, eps=1e-5):
    n, d = x.shape

    def bn(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)  # biased variance

    c = bn(x).T @ bn(y) / n
    total = 0.0
    for i in range(d):
        for j in range(d):
            total += (1 - c[i, i]) ** 2 if i == j else lambd * c[i, j] ** 2
    return total


def fd_grad(f, args, h=1e-6):
    """Central finite differences of f(*args) w.r.t. every array or scalar in args."""
    grads = []
    for k, a in enumerate(args):
        a = np.asarray(a, np.float64)
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            ap, am = a.copy(), a.copy()
            ap[idx] += h
            am[idx] -= h
            lo = list(args); hi = list(args)
            hi[k], lo[k] = ap, am
            g[idx] = (f(*hi) - f(*lo)) / (2 * h)
        grads.append(g)
    return grads


def _data(seed, b=5, d=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, d)), rng.normal(size=(b, d))


def _check(jax_fn, np_fn, args, rtol=1e-6):
    """Value and gradient (w.r.t. all args) of jax_fn vs np_fn / finite differences."""
    jargs = [jnp.asarray(a, jnp.float64) for a in args]
    v, g = jax.jit(jax.value_and_grad(jax_fn, argnums=tuple(range(len(args)))))(*jargs)
    close(v, np_fn(*args), rtol=rtol, what="value")
    for k, (gj, gn) in enumerate(zip(g, fd_grad(np_fn, args))):
        close(gj, gn, rtol=1e-5, atol=1e-7, what=f"grad of arg {k}")


# ---------------------------------------------------------------- parity with the references


@pytest.mark.parametrize("lt", [np.log(0.07), np.log(0.5)])
def test_clip(lt):
    x, y = _data(0)
    _check(lambda a, b, t: jm.clip_loss(a, b, t), np_clip, [x, y, np.float64(lt)])


def test_clip_logit_scale_clip():
    x, y = _data(1)
    lt = np.log(1 / 150.0)  # scale 150 > 100: clipped, no gradient to the temperature
    v, g = jax.jit(jax.value_and_grad(jm.clip_loss, argnums=2))(jnp.asarray(x), jnp.asarray(y), jnp.asarray(lt))
    close(v, np_clip(x, y, lt))
    assert float(g) == 0.0
    unclipped = jax.jit(functools.partial(jm.clip_loss, max_logit_scale=None))
    close(unclipped(jnp.asarray(x), jnp.asarray(y), jnp.asarray(lt)), np_clip(x, y, lt, np.inf))


@pytest.mark.parametrize("t_prime,bias", [(np.log(10.0), -10.0), (0.3, 1.5)])
def test_siglip(t_prime, bias):
    x, y = _data(2)
    _check(lambda a, b, t, c: jm.siglip_loss(a, b, t, c), np_siglip, [x, y, np.float64(t_prime), np.float64(bias)])


LABELS = np.array([[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]])


@pytest.mark.parametrize("temperature,threshold", [(0.1, 0.5), (0.3, 0.0), (0.2, 1.0)])
def test_multi_supcon(temperature, threshold):
    x, _ = _data(3, b=7)
    lab = jnp.asarray(LABELS)
    _check(lambda e, t: jm.multi_supcon_loss(e, lab, temperature=t, threshold=threshold),
           lambda e, t: np_multi_supcon(e, LABELS, t, threshold), [x, np.float64(temperature)])


def test_multi_supcon_ref_emb_and_bool_labels():
    x, r = _data(4, b=7)
    ref_labels = LABELS[::-1].copy()
    lab, rlab = jnp.asarray(LABELS.astype(bool)), jnp.asarray(ref_labels.astype(bool))
    _check(lambda e, q: jm.multi_supcon_loss(e, lab, ref_emb=q, ref_labels=rlab),
           lambda e, q: np_multi_supcon(e, LABELS, ref=q, ref_labels=ref_labels), [x, r])


def test_multi_supcon_with_one_hot_labels_is_supcon():
    x, _ = _data(5, b=8)
    ids = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    one_hot = jnp.asarray(np.eye(3)[ids])
    close(jax.jit(jm.multi_supcon_loss)(jnp.asarray(x), one_hot), jax.jit(jm.supcon_loss)(jnp.asarray(x), jnp.asarray(ids)))


def test_multi_supcon_class_ids_equal_one_hot_value_and_gradient():
    x, r = _data(6, b=8)
    ids, rids = np.array([0, 0, 1, 1, 2, 2, 0, 1]), np.array([2, 0, 1, 1, 0, 2, 2, 1])
    for kw_ids, kw_hot in [({}, {}), ({"ref_emb": jnp.asarray(r), "ref_labels": jnp.asarray(rids)},
                                      {"ref_emb": jnp.asarray(r), "ref_labels": jnp.asarray(np.eye(3)[rids])})]:
        for threshold in (0.5, 1.0, 0.0):
            f_ids = lambda e: jm.multi_supcon_loss(e, jnp.asarray(ids), threshold=threshold, **kw_ids)  # noqa: E731
            f_hot = lambda e: jm.multi_supcon_loss(e, jnp.asarray(np.eye(3)[ids]), threshold=threshold, **kw_hot)  # noqa: E731
            v_ids, g_ids = jax.value_and_grad(f_ids)(jnp.asarray(x))
            v_hot, g_hot = jax.value_and_grad(f_hot)(jnp.asarray(x))
            close(v_ids, v_hot)
            close(g_ids, g_hot)


@pytest.mark.parametrize("sigma", [None, 0.5, 2.0])
def test_dcl_and_dclw(sigma):
    x, y = _data(6)
    if sigma is None:
        _check(lambda a, b, t: jm.dcl_loss(a, b, temperature=t), lambda a, b, t: np_dcl(a, b, t), [x, y, np.float64(0.1)])
    else:
        _check(lambda a, b: jm.dclw_loss(a, b, sigma=sigma), lambda a, b: np_dcl(a, b, 0.1, sigma), [x, y])


def test_dclw_with_equal_positive_similarities_is_dcl():
    x, _ = _data(7)
    close(jax.jit(jm.dclw_loss)(jnp.asarray(x), jnp.asarray(x)), jax.jit(jm.dcl_loss)(jnp.asarray(x), jnp.asarray(x)))


@pytest.mark.parametrize("lambd", [5e-3, 0.1])
def test_barlow_twins(lambd):
    x, y = _data(8, b=6, d=3)
    _check(lambda a, b: jm.barlow_twins_loss(a, b, lambd=lambd), lambda a, b: np_barlow(a, b, lambd), [x, y])


# ---------------------------------------------------------------- learnable scalars


def test_gradients_reach_temperature_and_bias():
    x, y = (jnp.asarray(a, jnp.float32) for a in _data(9, b=8, d=6))
    p = jm.init_clip_params()
    g = jax.jit(jax.grad(lambda t: jm.clip_loss(x, y, t)))(p["log_temperature"])
    assert np.isfinite(float(g)) and float(g) != 0.0
    q = jm.init_siglip_params()
    gt, gb = jax.jit(jax.grad(lambda t, b: jm.siglip_loss(x, y, t, b), argnums=(0, 1)))(q["t_prime"], q["bias"])
    for v in (gt, gb):
        assert np.isfinite(float(v)) and float(v) != 0.0
    lab = jnp.asarray(np.random.default_rng(0).integers(0, 2, size=(8, 4)))
    for f in (lambda t: jm.dcl_loss(x, y, temperature=t), lambda t: jm.dclw_loss(x, y, temperature=t),
              lambda t: jm.multi_supcon_loss(x, lab, temperature=t)):
        v = float(jax.jit(jax.grad(f))(jnp.float32(0.2)))
        assert np.isfinite(v) and v != 0.0


def test_optax_style_update_of_temperature_and_bias():
    x, y = (jnp.asarray(a, jnp.float32) for a in _data(10, b=8, d=6))
    params = jm.init_siglip_params()
    step = jax.jit(lambda p: jax.tree_util.tree_map(
        lambda a, g: a - 0.1 * g, p, jax.grad(lambda q: jm.siglip_loss(x, y, q["t_prime"], q["bias"]))(p)))
    before = jm.siglip_loss(x, y, params["t_prime"], params["bias"])
    for _ in range(3):
        params = step(params)
    assert float(jm.siglip_loss(x, y, params["t_prime"], params["bias"])) < float(before)


# ---------------------------------------------------------------- transforms, padding, numerics

LOSS_FNS = {
    "clip": lambda x, y: jm.clip_loss(x, y, jnp.log(0.07)),
    "siglip": lambda x, y: jm.siglip_loss(x, y, jnp.log(10.0), -10.0),
    "multi_supcon": lambda x, y: jm.multi_supcon_loss(x, (y > 0).astype(jnp.int32)),
    "dcl": jm.dcl_loss,
    "dclw": jm.dclw_loss,
    "barlow": jm.barlow_twins_loss,
}


@pytest.mark.parametrize("name", list(LOSS_FNS))
def test_jit_equals_eager_and_vmap_equals_loop(name):
    f = LOSS_FNS[name]
    rng = np.random.default_rng(11)
    xs, ys = jnp.asarray(rng.normal(size=(3, 6, 4)), jnp.float32), jnp.asarray(rng.normal(size=(3, 6, 4)), jnp.float32)
    eager = f(xs[0], ys[0])
    close(jax.jit(f)(xs[0], ys[0]), eager, rtol=1e-5)
    batched = jax.jit(jax.vmap(f))(xs, ys)
    close(batched, [jax.jit(f)(xs[i], ys[i]) for i in range(3)], rtol=1e-5, atol=1e-6)
    assert eager.dtype == jnp.float32


WHERE_FNS = {
    "clip": lambda x, y, w: jm.clip_loss(x, y, jnp.log(0.07), where=w),
    "siglip": lambda x, y, w: jm.siglip_loss(x, y, jnp.log(10.0), -10.0, where=w),
    "multi_supcon": lambda x, y, w: jm.multi_supcon_loss(x, (y > 0).astype(jnp.int32), where=w),
    "dcl": lambda x, y, w: jm.dcl_loss(x, y, where=w),
    "dclw": lambda x, y, w: jm.dclw_loss(x, y, where=w),
    "barlow": lambda x, y, w: jm.barlow_twins_loss(x, y, where=w),
}


@pytest.mark.parametrize("name", list(WHERE_FNS))
def test_padding_and_empty_selection(name):
    f = WHERE_FNS[name]
    x, y = (jnp.asarray(a) for a in _data(12, b=6))
    pad_x = jnp.concatenate([x, 30.0 * jnp.ones((2, 4))])
    pad_y = jnp.concatenate([y, -30.0 * jnp.ones((2, 4))])
    w = jnp.arange(8) < 6
    close(jax.jit(f)(pad_x, pad_y, w), jax.jit(f)(x, y, jnp.ones(6, bool)), rtol=1e-6)
    v, g = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(pad_x, pad_y, jnp.zeros(8, bool))
    assert float(v) == 0.0
    assert all(np.all(np.asarray(gi) == 0) for gi in g)


@pytest.mark.parametrize("name", list(LOSS_FNS))
def test_finite_on_hard_inputs(name):
    vg = jax.jit(jax.value_and_grad(LOSS_FNS[name], argnums=(0, 1)))
    big = 1e4 * jnp.asarray(_data(13, b=4, d=3)[0], jnp.float32)
    cases = [
        (jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.float32),  # duplicates
        (jnp.zeros((4, 3)), jnp.zeros((4, 3)), jnp.float32),  # zero vectors
        (big, jnp.asarray(_data(13, b=4, d=3)[1], jnp.float32), jnp.float32),  # large scale
        (big, jnp.ones((4, 3)), jnp.bfloat16),
        (jnp.ones((1, 3)), jnp.ones((1, 3)), jnp.float32),  # a single sample
    ]
    for x, y, dtype in cases:
        v, g = vg(x.astype(dtype), y.astype(dtype))
        assert v.dtype == jnp.float32
        assert np.isfinite(float(v)) and all(np.all(np.isfinite(np.asarray(gi, np.float32))) for gi in g)
        assert all(gi.dtype == dtype for gi in g)


def test_extreme_scales_finite():
    x, y = (jnp.asarray(a, jnp.float32) for a in _data(14, b=6))
    for f in (lambda t, b: jm.siglip_loss(x, y, t, b), lambda t, b: jm.clip_loss(x, y, t, max_logit_scale=None) + 0 * b):
        vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        for t, b in ((10.0, -1e3), (-10.0, 1e3), (5.0, 0.0)):
            v, g = vg(jnp.float32(t), jnp.float32(b))
            assert np.isfinite(float(v)) and np.isfinite(float(g[0])) and np.isfinite(float(g[1]))
    v, g = jax.jit(jax.value_and_grad(lambda t: jm.dcl_loss(x, y, temperature=t)))(jnp.float32(1e-3))
    assert np.isfinite(float(v)) and np.isfinite(float(g))


def test_errors():
    a = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="`text_emb` must have the shape"):
        jm.clip_loss(a, jnp.ones((5, 3)), 0.0)
    with pytest.raises(ValueError, match="`log_temperature` must be a scalar"):
        jm.clip_loss(a, a, jnp.zeros(2))
    with pytest.raises(TypeError, match="`bias` must be a float"):
        jm.siglip_loss(a, a, 0.0, jnp.int32(1))
    with pytest.raises(ValueError, match="`x` must be a 2-D"):
        jm.dcl_loss(jnp.ones(3), jnp.ones(3))
    with pytest.raises(TypeError, match="not a mask"):
        jm.multi_supcon_loss(a, jm.pair_mask(jnp.arange(4)))
    with pytest.raises(ValueError, match="threshold"):
        jm.multi_supcon_loss(a, jnp.ones((4, 2)), threshold=1.5)
    with pytest.raises(ValueError, match="temperature"):
        jm.dcl_loss(a, a, temperature=0.0)
    with pytest.raises(ValueError, match="where"):
        jm.barlow_twins_loss(a, a, where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="reduction"):
        jm.clip_loss(a, a, 0.0, reduction="median")


# ---------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
_VG = {name: jax.jit(jax.value_and_grad(f, argnums=(0, 1))) for name, f in LOSS_FNS.items()}


@settings(max_examples=15, deadline=None)
@given(x=hnp.arrays(np.float32, (4, 3), elements=_finite), y=hnp.arrays(np.float32, (4, 3), elements=_finite))
def test_property_finite_value_and_grad(x, y):
    for name, vg in _VG.items():
        v, g = vg(jnp.asarray(x), jnp.asarray(y))
        assert np.isfinite(float(v)), name
        assert all(np.all(np.isfinite(np.asarray(gi))) for gi in g), name
        if name in ("clip", "siglip", "barlow"):
            assert float(v) >= -1e-4, name
