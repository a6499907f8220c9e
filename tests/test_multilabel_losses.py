"""Multi-label classification losses against independent float64 NumPy references.

Each reference below is written from the paper / the reference formula (not from jaxmetric's
code), in float64, with plain exp/log where it is safe for the test inputs. Gradients are
compared with central finite differences of the NumPy reference. Torch's BCEWithLogitsLoss,
MultiLabelSoftMarginLoss and torchvision's sigmoid focal loss formula (written here with torch
ops, as torchvision is not installed) and optax's losses are checked where they apply.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmetric as jm
from jaxmetric.losses import multilabel as ml

# --------------------------------------------------------------------------------------
# NumPy float64 references (from the formulas in reference/multilabel-reference.md)


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def log_sig(z):
    return -np.logaddexp(0.0, -z)


def _reduce(losses, known, reduction):
    if reduction == "sum":
        return np.sum(losses * known)
    if reduction == "mean":
        den = np.sum(known)
        return np.sum(losses * known) / den if den > 0 else 0.0
    raise ValueError(reduction)


def _known(y, label_mask=None):
    k = (y >= 0).astype(np.float64)
    return k if label_mask is None else k * label_mask


def ref_bce(x, y, pos_weight=1.0, weight=1.0, reduction="mean", label_mask=None):
    t = np.clip(y, 0, 1)
    l = -weight * (pos_weight * t * log_sig(x) + (1 - t) * log_sig(-x))
    return _reduce(l, _known(y, label_mask), reduction)


def ref_focal(x, y, alpha=0.25, gamma=2.0, reduction="mean"):
    t = np.clip(y, 0, 1)
    p = sig(x)
    ce = -(t * log_sig(x) + (1 - t) * log_sig(-x))
    p_t = p * t + (1 - p) * (1 - t)
    l = ce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        l = (alpha * t + (1 - alpha) * (1 - t)) * l
    return _reduce(l, _known(y), reduction)


def ref_asl(x, y, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8, reduction="sum"):
    # The paper's formula in the reference code's form: probabilities clamped at eps.
    t = np.clip(y, 0, 1)
    xs_pos = sig(x)
    xs_neg = 1.0 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = np.minimum(xs_neg + clip, 1.0)
    los_pos = t * np.log(np.maximum(xs_pos, eps))
    los_neg = (1 - t) * np.log(np.maximum(xs_neg, eps))
    pt = xs_pos * t + xs_neg * (1 - t)
    w = (1.0 - pt) ** (gamma_pos * t + gamma_neg * (1 - t))
    return _reduce(-(los_pos + los_neg) * w, _known(y), reduction)


def _log1p_sum_exp(z, w):
    """log(1 + sum_j w_j exp(z_j))."""
    sel = w > 0
    if not sel.any():
        return 0.0
    return np.logaddexp.reduce(np.concatenate([[0.0], z[sel] + np.log(w[sel])]))


def ref_zlpr(x, y, reduction="mean"):
    known = _known(y)
    t = np.clip(y, 0, 1)
    rows, valid = [], []
    for i in range(x.shape[0]):
        rows.append(_log1p_sum_exp(x[i], known[i] * (1 - t[i])) + _log1p_sum_exp(-x[i], known[i] * t[i]))
        valid.append(known[i].any())
    rows, valid = np.array(rows), np.array(valid, float)
    if reduction == "none":
        return rows * valid
    return _reduce(rows, valid, reduction)


def ref_two_way(x, y, Tp=4.0, Tn=1.0):
    def part(xv, yv):
        pos, neg = yv == 1, yv == 0
        if not pos.any():
            return None
        if not neg.any():
            return 0.0
        n = Tn * np.logaddexp.reduce(xv[neg] / Tn)
        p = Tp * np.logaddexp.reduce(-xv[pos] / Tp)
        return np.logaddexp(0.0, n + p)

    s = [part(x[i], y[i]) for i in range(x.shape[0])]
    c = [part(x[:, j], y[:, j]) for j in range(x.shape[1])]
    s = [v for v in s if v is not None]
    c = [v for v in c if v is not None]
    return (np.mean(s) if s else 0.0) + (np.mean(c) if c else 0.0)


def ref_hill(x, y, lamb=1.5, margin=1.0, gamma=2.0, reduction="sum"):
    t = np.clip(y, 0, 1)
    pm = sig(x - margin)
    p = sig(x)
    l = -t * (1 - pm) ** gamma * np.log(pm) + (1 - t) * (lamb - p) * p**2
    return _reduce(l, _known(y), reduction)


def ref_splc(x, y, tau=0.6, margin=1.0, gamma=2.0, correct=True, reduction="sum"):
    t = np.clip(y, 0, 1)
    xs = np.where(t == 1, x - margin, x)
    if correct:
        t = np.where((t == 0) & (sig(xs) > tau), 1.0, t)
    p = sig(xs)
    pt = (1 - p) * t + p * (1 - t)
    l = -(t * np.log(p) + (1 - t) * np.log(1 - p)) * pt**gamma
    return _reduce(l, _known(y), reduction)


def ref_poly(x, y, epsilon=2.0, gamma=0.0, alpha=None, reduction="mean"):
    t = np.clip(y, 0, 1)
    p = sig(x)
    ce = -(t * log_sig(x) + (1 - t) * log_sig(-x))
    p_t = p * t + (1 - p) * (1 - t)
    fl = ce * (1 - p_t) ** gamma
    if alpha is not None:
        fl = (alpha * t + (1 - alpha) * (1 - t)) * fl
    return _reduce(fl + epsilon * (1 - p_t) ** (gamma + 1), _known(y), reduction)


def ref_db(x, y, counts, N, alpha=0.1, beta=10.0, mu=0.2, lam=2.0, kappa=0.05, focal=True, gamma=2.0, balance=2.0):
    t = np.clip(y, 0, 1) * (y >= 0)
    n = np.clip(counts.astype(float), 1, N - 1)
    r_hat = np.empty_like(x)
    for i in range(x.shape[0]):
        s = np.sum(t[i] / n)
        r_hat[i] = alpha + sig(beta * ((1 / n) / s - mu)) if s > 0 else 1 + alpha
    p = n / N
    z = x + kappa / lam * np.log(p / (1 - p))
    pos = np.logaddexp(0, -z)
    neg = np.logaddexp(0, lam * z) / lam
    if focal:
        pos = balance * sig(-z) ** gamma * pos
        neg = balance * sig(lam * z) ** gamma * neg
    return _reduce(r_hat * (t * pos + (1 - t) * neg), _known(y), "mean")


def fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


# --------------------------------------------------------------------------------------
# inputs


def make_inputs(seed, b=6, c=5, unknown=True, scale=2.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, c)) * scale
    y = (rng.random((b, c)) < 0.4).astype(np.float64)
    y[0] = 0.0  # a row with no positives
    y[2, 0] = 1.0
    if unknown:
        y[1] = -1.0  # an all-unknown row
        y[3, 1] = -1.0
        y[4, 2] = -1.0
    return x, y


PW = np.array([0.5, 1.0, 2.0, 3.0, 9.0])
CW = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
COUNTS = np.array([3, 40, 1, 0, 99])
COUNTS2 = np.array([3, 40, 1, 7, 60])

# name -> (jaxmetric call f(x, y, **kwargs), NumPy reference ref(x, y))
CASE_TABLE = {
    "bce": (lambda x, y, **k: ml.bce_loss(x, y, **k), ref_bce),
    "bce_pos_weight": (lambda x, y, **k: ml.bce_loss(x, y, pos_weight=jnp.asarray(PW), **k), lambda x, y: ref_bce(x, y, pos_weight=PW)),
    "bce_weight_sum": (
        lambda x, y, **k: ml.bce_loss(x, y, weight=jnp.asarray(CW), reduction="sum", **k),
        lambda x, y: ref_bce(x, y, weight=CW, reduction="sum"),
    ),
    "focal": (lambda x, y, **k: ml.focal_loss(x, y, **k), ref_focal),
    "focal_noalpha_g1.5": (
        lambda x, y, **k: ml.focal_loss(x, y, alpha=None, gamma=1.5, reduction="sum", **k),
        lambda x, y: ref_focal(x, y, alpha=None, gamma=1.5, reduction="sum"),
    ),
    "asl": (lambda x, y, **k: ml.asymmetric_loss(x, y, **k), ref_asl),
    "asl_class_defaults": (
        lambda x, y, **k: ml.asymmetric_loss(x, y, gamma_pos=1.0, reduction="mean", **k),
        lambda x, y: ref_asl(x, y, gamma_pos=1.0, reduction="mean"),
    ),
    "asl_noclip": (
        lambda x, y, **k: ml.asymmetric_loss(x, y, gamma_neg=2.0, gamma_pos=1.0, clip=0.0, **k),
        lambda x, y: ref_asl(x, y, gamma_neg=2.0, gamma_pos=1.0, clip=0.0),
    ),
    "zlpr": (lambda x, y, **k: ml.zlpr_loss(x, y, **k), ref_zlpr),
    "two_way": (lambda x, y, **k: ml.two_way_loss(x, y, **k), ref_two_way),
    "two_way_T": (lambda x, y, **k: ml.two_way_loss(x, y, Tp=2.0, Tn=0.5, **k), lambda x, y: ref_two_way(x, y, Tp=2.0, Tn=0.5)),
    "hill": (lambda x, y, **k: ml.hill_loss(x, y, **k), ref_hill),
    "hill_nondefault": (
        lambda x, y, **k: ml.hill_loss(x, y, lamb=2.0, margin=0.5, gamma=1.0, reduction="mean", **k),
        lambda x, y: ref_hill(x, y, lamb=2.0, margin=0.5, gamma=1.0, reduction="mean"),
    ),
    "splc": (lambda x, y, **k: ml.splc_loss(x, y, **k), ref_splc),
    "splc_epoch0": (lambda x, y, **k: ml.splc_loss(x, y, epoch=0, **k), lambda x, y: ref_splc(x, y, correct=False)),
    "splc_tau": (
        lambda x, y, **k: ml.splc_loss(x, y, tau=0.3, epoch=3, margin=0.5, **k),
        lambda x, y: ref_splc(x, y, tau=0.3, margin=0.5),
    ),
    "poly": (lambda x, y, **k: ml.poly_bce_loss(x, y, **k), ref_poly),
    "poly_focal": (
        lambda x, y, **k: ml.poly_bce_loss(x, y, epsilon=-1.0, gamma=2.0, alpha=0.25, **k),
        lambda x, y: ref_poly(x, y, epsilon=-1.0, gamma=2.0, alpha=0.25),
    ),
    "db": (
        lambda x, y, **k: ml.distribution_balanced_loss(x, y, jnp.asarray(COUNTS), 100, **k),
        lambda x, y: ref_db(x, y, COUNTS, 100),
    ),
    "db_nofocal": (
        lambda x, y, **k: ml.distribution_balanced_loss(x, y, jnp.asarray(COUNTS2), 100, focal=False, neg_scale=5.0, init_bias=0.1, **k),
        lambda x, y: ref_db(x, y, COUNTS2, 100, focal=False, lam=5.0, kappa=0.1),
    ),
}
IDS = list(CASE_TABLE)
BASE = ["bce", "focal", "asl", "zlpr", "two_way", "hill", "splc", "poly", "db"]  # one per loss
VALUE_CASES = [(n, 0) for n in IDS] + [(n, 1) for n in BASE]


@pytest.mark.parametrize("name,seed", VALUE_CASES, ids=[f"{n}-{s}" for n, s in VALUE_CASES])
def test_value_and_grad_vs_numpy(name, seed):
    fn, ref = CASE_TABLE[name]
    x, y = make_inputs(seed)
    v, g = jax.value_and_grad(lambda a: fn(a, jnp.asarray(y)))(jnp.asarray(x))
    np.testing.assert_allclose(float(v), ref(x, y), rtol=1e-9, atol=1e-12, err_msg=name)
    g_ref = fd_grad(lambda a: ref(a, y), x)
    np.testing.assert_allclose(np.asarray(g), g_ref, rtol=1e-5, atol=1e-7, err_msg=name)
    # unknown labels (and the all-unknown row) get exactly zero gradient
    assert np.all(np.asarray(g)[y < 0] == 0.0), name


@pytest.mark.parametrize("name", BASE + ["bce_pos_weight", "asl_noclip", "splc_epoch0"])
def test_label_mask_where_and_empty_rows(name):
    """label_mask == -1 targets; ``where`` == the sliced batch with zero gradient on padded
    rows; all-unknown batches give 0 with a zero gradient; rows without positives are finite."""
    f = CASE_TABLE[name][0]
    x, y = make_inputs(3)
    X = jnp.asarray(x)
    mask = y >= 0
    a = f(X, jnp.asarray(y))
    b = f(X, jnp.asarray(np.where(mask, y, 0.0)), label_mask=jnp.asarray(mask))
    np.testing.assert_allclose(float(a), float(b), rtol=1e-10)

    keep = np.array([True, True, False, True, False, True])
    v, g = jax.value_and_grad(lambda a_: f(a_, jnp.asarray(y), where=jnp.asarray(keep)))(X)
    y_rows_unknown = np.where(keep[:, None], y, -1.0)  # padded rows == all-unknown rows
    np.testing.assert_allclose(float(v), float(f(X, jnp.asarray(y_rows_unknown))), rtol=1e-10, atol=1e-12)
    assert np.all(np.asarray(g)[~keep] == 0.0)

    v, g = jax.value_and_grad(lambda a_: f(a_, -jnp.ones(x.shape)))(X)
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)
    v, g = jax.value_and_grad(lambda a_: f(a_, jnp.zeros(x.shape)))(X)
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
    v, g = jax.value_and_grad(lambda a_: f(a_, jnp.asarray(y), where=jnp.zeros(x.shape[0], bool)))(X)
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)


def _with_kwargs(name):
    return CASE_TABLE[name][0]


@pytest.mark.parametrize("name", ["bce", "zlpr", "two_way", "db"])
def test_where_equals_sliced_batch(name):
    f = _with_kwargs(name)
    x, y = make_inputs(4, unknown=False)
    keep = np.array([True, True, False, True, False, True])
    a = f(jnp.asarray(x), jnp.asarray(y), where=jnp.asarray(keep))
    np.testing.assert_allclose(float(a), float(f(jnp.asarray(x[keep]), jnp.asarray(y[keep]))), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", BASE)
def test_extreme_logits_float32_finite(name):
    f = _with_kwargs(name)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    x[:3] = np.array([[1e4, -1e4, 0.0, 30.0, -30.0], [-1e4, 1e4, 1e4, -1e4, 5.0], [80.0, -80.0, 1e4, 1e4, -1e4]])
    y = make_inputs(0)[1]
    v, g = jax.jit(jax.value_and_grad(lambda a: f(a, jnp.asarray(y))))(jnp.asarray(x))
    assert v.dtype == jnp.float32 and np.isfinite(float(v)), name
    assert g.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(g))), name


@pytest.mark.parametrize("name", BASE)
def test_jit_equals_eager_and_vmap_equals_loop(name):
    f = _with_kwargs(name)
    xs = jnp.asarray(np.stack([make_inputs(s)[0] for s in (0, 1)]))
    ys = jnp.asarray(np.stack([make_inputs(s)[1] for s in (0, 1)]))
    eager = np.array([float(f(xs[k], ys[k])) for k in range(2)])
    jf = jax.jit(f)
    jitted = np.array([float(jf(xs[k], ys[k])) for k in range(2)])
    vm = np.asarray(jax.vmap(f)(xs, ys))
    np.testing.assert_allclose(jitted, eager, rtol=1e-12)
    np.testing.assert_allclose(vm, eager, rtol=1e-12)


def test_traced_hyperparameters_and_no_retrace():
    x, y = make_inputs(0)
    traces = []

    @jax.jit
    def f(a, g, alpha):
        traces.append(1)
        return ml.focal_loss(a, jnp.asarray(y), gamma=g, alpha=alpha) + ml.asymmetric_loss(a, jnp.asarray(y), gamma_neg=g, clip=alpha / 5)

    for g, al in [(2.0, 0.25), (1.0, 0.5), (0.5, 0.75)]:
        v = f(jnp.asarray(x), g, al)
        np.testing.assert_allclose(float(v), ref_focal(x, y, alpha=al, gamma=g) + ref_asl(x, y, gamma_neg=g, clip=al / 5), rtol=1e-9)
    assert len(traces) == 1


def test_reduction_none_shapes_and_callable():
    x, y = make_inputs(0)
    X, Y = jnp.asarray(x), jnp.asarray(y)
    assert ml.bce_loss(X, Y, reduction="none").shape == x.shape
    assert ml.zlpr_loss(X, Y, reduction="none").shape == (x.shape[0],)
    np.testing.assert_allclose(np.asarray(ml.zlpr_loss(X, Y, reduction="none")), ref_zlpr(x, y, "none"), rtol=1e-10)
    s, c = ml.two_way_loss(X, Y, reduction="none")
    assert s.shape == (x.shape[0],) and c.shape == (x.shape[1],)
    el = np.asarray(ml.asymmetric_loss(X, Y, reduction="none"))
    assert np.all(el[y < 0] == 0.0)
    np.testing.assert_allclose(el.sum(), float(ml.asymmetric_loss(X, Y)), rtol=1e-12)
    v = ml.bce_loss(X, Y, reduction=lambda l, w: jnp.max(jnp.where(w > 0, l, 0.0)))
    assert np.isfinite(float(v))


def test_stop_gradient_weight_asl():
    x, y = make_inputs(2)
    X, Y = jnp.asarray(x), jnp.asarray(y)
    v1, g1 = jax.value_and_grad(lambda a: ml.asymmetric_loss(a, Y, gamma_pos=1.0))(X)
    v2, g2 = jax.value_and_grad(lambda a: ml.asymmetric_loss(a, Y, gamma_pos=1.0, stop_gradient_weight=True))(X)
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-12)
    assert not np.allclose(np.asarray(g1), np.asarray(g2))
    # with a constant weight, the gradient is w * d(-log) / dx
    t = np.clip(y, 0, 1)
    p = sig(x)
    pm = np.maximum(p - 0.05, 0)
    w = t * (1 - p) ** 1.0 + (1 - t) * pm**4
    d_log = np.where(t == 1, -(1 - p), np.where(pm > 0, p * (1 - p) / (1 - pm), 0.0))
    np.testing.assert_allclose(np.asarray(g2), np.where(y >= 0, w * d_log, 0.0), rtol=1e-8, atol=1e-12)


def test_soft_targets_zlpr_bce_focal_poly():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 5)) * 2
    y = rng.random((6, 5))
    y[0, 0] = -1.0
    for fn, ref in [
        (ml.zlpr_loss, ref_zlpr),
        (ml.bce_loss, ref_bce),
        (ml.focal_loss, ref_focal),
        (ml.poly_bce_loss, ref_poly),
    ]:
        v, g = jax.value_and_grad(lambda a: fn(a, jnp.asarray(y)))(jnp.asarray(x))
        np.testing.assert_allclose(float(v), ref(x, y), rtol=1e-9)
        np.testing.assert_allclose(np.asarray(g), fd_grad(lambda a: ref(a, y), x), rtol=1e-5, atol=1e-8)


def test_zlpr_matches_circle_unified_form():
    """ZLPR = log(1 + sum_{n,p} e^{x_n - x_p} + sum_n e^{x_n} + sum_p e^{-x_p}) (Su's derivation)."""
    x, y = make_inputs(1, unknown=False)
    rows = []
    for i in range(x.shape[0]):
        pos, neg = x[i][y[i] == 1], x[i][y[i] == 0]
        terms = [0.0] + [a - b for a in neg for b in pos] + list(neg) + list(-pos)
        rows.append(np.logaddexp.reduce(terms))
    np.testing.assert_allclose(float(ml.zlpr_loss(jnp.asarray(x), jnp.asarray(y))), np.mean(rows), rtol=1e-10)


def test_focal_gamma0_no_alpha_is_bce_and_poly_eps0_is_bce():
    x, y = make_inputs(0)
    X, Y = jnp.asarray(x), jnp.asarray(y)
    b = float(ml.bce_loss(X, Y))
    np.testing.assert_allclose(float(ml.focal_loss(X, Y, gamma=0.0, alpha=None)), b, rtol=1e-12)
    np.testing.assert_allclose(float(ml.poly_bce_loss(X, Y, epsilon=0.0)), b, rtol=1e-12)


# --------------------------------------------------------------------------------------
# torch / optax parity


def test_bce_vs_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)) * 3
    y = (rng.random((6, 5)) < 0.3).astype(np.float64)
    pw = rng.random(5) * 4
    w = rng.random(5) + 0.5
    for kwargs, tkw in [({}, {}), ({"pos_weight": pw}, {"pos_weight": torch.tensor(pw)}), ({"pos_weight": pw, "weight": w}, {"pos_weight": torch.tensor(pw), "weight": torch.tensor(w)})]:
        for red in ["mean", "sum"]:
            xt = torch.tensor(x, requires_grad=True)
            vt = torch.nn.BCEWithLogitsLoss(reduction=red, **tkw)(xt, torch.tensor(y))
            (gt,) = torch.autograd.grad(vt, xt)
            jkw = {k: jnp.asarray(v) for k, v in kwargs.items()}
            v, g = jax.value_and_grad(lambda a: ml.bce_loss(a, jnp.asarray(y), reduction=red, **jkw))(jnp.asarray(x))
            np.testing.assert_allclose(float(v), float(vt.detach()), rtol=1e-12)
            np.testing.assert_allclose(np.asarray(g), gt.numpy(), rtol=1e-10, atol=1e-14)
    # MultiLabelSoftMarginLoss(weight) = mean over classes, then batch
    xt = torch.tensor(x, requires_grad=True)
    vt = torch.nn.MultiLabelSoftMarginLoss(weight=torch.tensor(w))(xt, torch.tensor(y))
    (gt,) = torch.autograd.grad(vt, xt)
    v, g = jax.value_and_grad(lambda a: ml.bce_loss(a, jnp.asarray(y), weight=jnp.asarray(w)))(jnp.asarray(x))
    np.testing.assert_allclose(float(v), float(vt.detach()), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g), gt.numpy(), rtol=1e-10, atol=1e-14)


def test_focal_vs_torchvision_formula():
    """torchvision.ops.sigmoid_focal_loss, written from its documentation with torch ops."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def tv_focal(inputs, targets, alpha=0.25, gamma=2.0):
        p = torch.sigmoid(inputs)
        ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * ((1 - p_t) ** gamma)
        if alpha >= 0:
            loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
        return loss.mean()

    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5)) * 3
    y = (rng.random((6, 5)) < 0.4).astype(np.float64)
    for alpha, gamma in [(0.25, 2.0), (-1, 2.0), (0.6, 0.5)]:
        xt = torch.tensor(x, requires_grad=True)
        vt = tv_focal(xt, torch.tensor(y), alpha, gamma)
        (gt,) = torch.autograd.grad(vt, xt)
        v, g = jax.value_and_grad(lambda a: ml.focal_loss(a, jnp.asarray(y), alpha=alpha, gamma=gamma))(jnp.asarray(x))
        np.testing.assert_allclose(float(v), float(vt.detach()), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(g), gt.numpy(), rtol=1e-8, atol=1e-14)


def test_focal_with_pos_weight_and_weight_vs_torch_formula():
    """``(1 - p_t)^gamma * alpha_t * weight * BCE(logits, targets, pos_weight)``: torch's
    ``binary_cross_entropy_with_logits(pos_weight, weight)`` times torchvision's focal factors,
    float64, value and gradient; the imbalanced case (many labels, a few positives per row)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def ref(x, t, pos_weight, weight, alpha, gamma, reduction):
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pos_weight)
        p = torch.sigmoid(x)
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * (1 - p_t) ** gamma
        if alpha is not None:
            loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
        if weight is not None:
            loss = loss * weight
        return loss.mean() if reduction == "mean" else loss.sum()

    rng = np.random.default_rng(5)
    b, c = 6, 64
    x = rng.normal(size=(b, c)) * 3
    y = (rng.random((b, c)) < 5 / c).astype(np.float64)
    pw = ((b - y.sum(0).clip(1)) / y.sum(0).clip(1))
    weights = [None, rng.random(c) + 0.5, rng.random((b, c)), rng.random((b, 1))]
    for pos_weight in (pw, 51.0):
        for weight in weights:
            for alpha, gamma, red in [(None, 2.0, "mean"), (0.25, 2.0, "sum"), (0.7, 0.5, "mean")]:
                tpw = torch.as_tensor(pos_weight, dtype=torch.float64)
                tw = None if weight is None else torch.tensor(weight)
                xt = torch.tensor(x, requires_grad=True)
                vt = ref(xt, torch.tensor(y), tpw, tw, alpha, gamma, red)
                (gt,) = torch.autograd.grad(vt, xt)
                jw = None if weight is None else jnp.asarray(weight)
                v, g = jax.value_and_grad(
                    lambda a: ml.focal_loss(a, jnp.asarray(y), alpha=alpha, gamma=gamma, pos_weight=jnp.asarray(pos_weight), weight=jw, reduction=red)
                )(jnp.asarray(x))
                np.testing.assert_allclose(float(v), float(vt.detach()), rtol=1e-10)
                np.testing.assert_allclose(np.asarray(g), gt.numpy(), rtol=1e-8, atol=1e-14)


def test_focal_with_pos_weight_vs_numpy_formula():
    """Independent float64 NumPy formula, unknown labels (-1) included."""
    x, y = make_inputs(3)
    pw = np.linspace(0.5, 8.0, x.shape[1])
    t = np.clip(y, 0, 1)
    p = sig(x)
    ce = -(pw * t * log_sig(x) + (1 - t) * log_sig(-x))
    p_t = p * t + (1 - p) * (1 - t)
    losses = 0.25 * t + 0.75 * (1 - t)
    losses = losses * (1 - p_t) ** 2.0 * ce
    want = _reduce(losses, _known(y), "mean")
    got = ml.focal_loss(jnp.asarray(x), jnp.asarray(y), pos_weight=jnp.asarray(pw))
    np.testing.assert_allclose(float(got), want, rtol=1e-10)


def test_focal_pos_weight_one_and_weight_none_is_focal():
    x, y = make_inputs(4)
    X, Y = jnp.asarray(x), jnp.asarray(y)
    np.testing.assert_allclose(float(ml.focal_loss(X, Y, pos_weight=1.0, weight=1.0)), float(ml.focal_loss(X, Y)), rtol=1e-12)
    # gamma = 0 and no alpha: focal is the (pos-weighted, weighted) BCE
    w = jnp.asarray(np.random.default_rng(0).random((x.shape[0], 1)))
    np.testing.assert_allclose(
        float(ml.focal_loss(X, Y, alpha=None, gamma=0.0, pos_weight=3.0, weight=w)),
        float(ml.bce_loss(X, Y, pos_weight=3.0, weight=w)), rtol=1e-12)


def test_bce_per_row_weight_vs_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, y, w = rng.normal(size=(5, 4)), (rng.random((5, 4)) < 0.5) * 1.0, rng.random((5, 1))
    vt = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y), weight=torch.tensor(w))
    np.testing.assert_allclose(float(ml.bce_loss(jnp.asarray(x), jnp.asarray(y), weight=jnp.asarray(w))), float(vt), rtol=1e-12)


@pytest.mark.parametrize("fn", [ml.bce_loss, ml.focal_loss])
def test_negative_or_nonfinite_weights_are_refused(fn):
    x, y = jnp.zeros((3, 4)), jnp.zeros((3, 4))
    for name in ("pos_weight", "weight"):
        for bad, what in ((-1.0, "non-negative"), (jnp.nan, "finite"), (jnp.inf, "finite")):
            with pytest.raises(ValueError, match=rf"`{name}` must hold {what} weights"):
                fn(x, y, **{name: jnp.full((4,), bad)})
    # traced weights cannot be refused while tracing: a negative or NaN one makes the value NaN
    for name in ("pos_weight", "weight"):
        for bad in (-1.0, jnp.nan):
            assert np.isnan(float(jax.jit(lambda w: fn(x, y, **{name: w}))(jnp.full((4,), 1.0).at[2].set(bad)))), (name, bad)
        assert np.isfinite(float(jax.jit(lambda w: fn(x, y, **{name: w}))(jnp.full((4,), 2.0))))


def test_vs_optax():
    optax = pytest.importorskip("optax")
    x, y = make_inputs(0, unknown=False)
    X, Y = jnp.asarray(x), jnp.asarray(y)
    np.testing.assert_allclose(float(ml.bce_loss(X, Y)), float(jnp.mean(optax.sigmoid_binary_cross_entropy(X, Y))), rtol=1e-10)
    np.testing.assert_allclose(
        float(ml.focal_loss(X, Y, alpha=None)), float(jnp.mean(optax.sigmoid_focal_loss(X, Y, alpha=None, gamma=2.0))), rtol=1e-9
    )
    np.testing.assert_allclose(
        float(ml.focal_loss(X, Y, alpha=0.25)), float(jnp.mean(optax.sigmoid_focal_loss(X, Y, alpha=0.25, gamma=2.0))), rtol=1e-9
    )


# --------------------------------------------------------------------------------------
# weights helpers


def test_pos_weight_from_counts():
    counts = np.array([1, 10, 50, 0, 100])
    w = np.asarray(ml.pos_weight_from_counts(jnp.asarray(counts), 100))
    np.testing.assert_allclose(w, [99.0, 9.0, 1.0, 99.0, 0.0], rtol=1e-6)
    w = np.asarray(ml.pos_weight_from_counts(jnp.asarray(counts), 100, power=0.5, max_weight=5.0))
    np.testing.assert_allclose(w, np.minimum(np.array([99.0, 9.0, 1.0, 99.0, 0.0]) ** 0.5, 5.0), rtol=1e-6)
    with pytest.raises(ValueError, match="pos_counts"):
        ml.pos_weight_from_counts(jnp.ones((2, 2)), 10)


def test_class_balanced_weights():
    counts = np.array([1, 10, 100, 1000, 5000])
    for beta in [0.9, 0.99, 0.999, 0.9999]:
        w = (1 - beta) / (1 - beta ** counts.astype(float))
        w = w / w.sum() * len(counts)
        np.testing.assert_allclose(np.asarray(jm.class_balanced_weights(jnp.asarray(counts), beta=beta)), w, rtol=1e-4)  # float32
    raw = np.asarray(jm.class_balanced_weights(jnp.asarray(counts), beta=0.99, normalize=False))
    np.testing.assert_allclose(raw, 0.01 / (1 - 0.99 ** counts.astype(float)), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(jm.class_balanced_weights(jnp.array([0, 3])))))
    with pytest.raises(ValueError, match="beta"):
        jm.class_balanced_weights(jnp.array([1, 2]), beta=1.0)


def test_dtypes_bf16_and_float32():
    x, y = make_inputs(0)
    xb = jnp.asarray(x, jnp.bfloat16)
    v, g = jax.value_and_grad(lambda a: ml.focal_loss(a, jnp.asarray(y)))(xb)
    assert v.dtype == jnp.float32 and g.dtype == jnp.bfloat16
    v32 = ml.asymmetric_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y))
    assert v32.dtype == jnp.float32
    np.testing.assert_allclose(float(v32), ref_asl(x, y), rtol=1e-5)


# --------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: ml.bce_loss(jnp.zeros(3), jnp.zeros(3)), ValueError, r"`logits` must be a 2-D.*got shape \(3,\)"),
        (lambda: ml.bce_loss(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3))), TypeError, "`logits` must have a floating dtype"),
        (lambda: ml.focal_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4))), ValueError, r"`targets` must have the shape of `logits` \(2, 3\); got shape \(2, 4\)"),
        (lambda: ml.asymmetric_loss(jnp.zeros((2, 3)), jnp.full((2, 3), 0.5)), ValueError, "`targets` must hold only 0, 1 or -1"),
        (lambda: ml.zlpr_loss(jnp.zeros((2, 3)), jnp.full((2, 3), 2.0)), ValueError, r"`targets` must hold values in \[0, 1\]"),
        (lambda: ml.bce_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), reduction="avg"), ValueError, "`reduction` must be one of"),
        (lambda: ml.bce_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), pos_weight=jnp.ones(4)), ValueError, "`pos_weight` must have shape"),
        (lambda: ml.hill_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), label_mask=jnp.ones((3, 2), bool)), ValueError, "`label_mask` must have the shape"),
        (lambda: ml.two_way_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), where=jnp.ones(2)), TypeError, "`where` must be a bool array"),
        (lambda: ml.two_way_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), Tp=0.0), ValueError, "`Tp` must be > 0"),
        (lambda: ml.distribution_balanced_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones(4), 10), ValueError, r"`class_counts` must have shape \(3,\)"),
        (lambda: ml.asymmetric_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), clip=-0.1), ValueError, "`clip` must be >= 0"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_raise_under_jit_at_trace_time():
    with pytest.raises(ValueError, match="`targets` must have the shape"):
        jax.jit(lambda a, b: ml.bce_loss(a, b))(jnp.zeros((2, 3)), jnp.zeros((3, 2)))


# --------------------------------------------------------------------------------------
# hypothesis: finite values and gradients, unknown labels inert, for any finite logits

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_ALL = jax.jit(
    lambda x, y: jnp.stack([jax.value_and_grad(lambda a: CASE_TABLE[n][0](a, y))(x)[0] for n in BASE]),
)
_ALL_GRADS = jax.jit(lambda x, y: jnp.stack([jax.grad(lambda a: CASE_TABLE[n][0](a, y))(x) for n in BASE]))


@settings(max_examples=12, deadline=None)
@given(
    hnp.arrays(np.float32, (6, 5), elements=st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from([0.0, 1e4, -1e4]))),
    hnp.arrays(np.int32, (6, 5), elements=st.sampled_from([-1, 0, 1])),
)
def test_property_finite_and_unknown_inert(x, y):
    v = np.asarray(_ALL(jnp.asarray(x), jnp.asarray(y)))
    g = np.asarray(_ALL_GRADS(jnp.asarray(x), jnp.asarray(y)))
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
    assert np.all(g[:, y < 0] == 0.0)
    # changing the logits of unknown labels changes nothing
    x2 = np.where(y < 0, -x + 3.0, x).astype(np.float32)
    np.testing.assert_allclose(np.asarray(_ALL(jnp.asarray(x2), jnp.asarray(y))), v, rtol=1e-6, atol=1e-6)
