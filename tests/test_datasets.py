"""The ARFF (Mulan / MEKA) loader: real Mulan files from ``../shared/data/multilabel`` beside
the checkout (required in CI, skipped locally when absent; ``MULTILABEL_DATA_DIR`` overrides
the location), and hand-written dense / sparse files covering the format's corners."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from jaxmetric.datasets import load_arff, read_mulan_labels

from tests.multilabel_data import data_dir


MULAN = {
    # file: (rows, features, labels, label cardinality, sha256 prefix) from the data README
    "yeast-train.arff": (1500, 103, 14, None, "e759dc991ff54694"),
    "yeast-test.arff": (917, 103, 14, None, "4aaac102bff9669a"),
    "emotions-train.arff": (391, 72, 6, None, "bbe704106c79bb8f"),
    "emotions-test.arff": (202, 72, 6, None, "f13d4b746b7b5c8e"),
}


@pytest.mark.parametrize("name", list(MULAN))
def test_mulan_files(name):
    d = data_dir()
    rows, feats, labels, _, sha = MULAN[name]
    assert hashlib.sha256((d / name).read_bytes()).hexdigest().startswith(sha)
    X, Y, fnames, lnames = load_arff(d / name, num_labels=labels)
    assert X.shape == (rows, feats) and X.dtype == np.float32
    assert Y.shape == (rows, labels) and Y.dtype == np.int8
    assert set(np.unique(Y)) <= {0, 1} and np.isfinite(X).all()
    assert len(fnames) == feats and len(lnames) == labels


def test_yeast_label_cardinality_and_xml_order():
    d = data_dir()
    X_tr, Y_tr, _, names = load_arff(d / "yeast-train.arff", 14)
    _, Y_te, _, _ = load_arff(d / "yeast-test.arff", 14)
    card = np.concatenate([Y_tr, Y_te]).sum(1).mean()
    assert abs(card - 4.24) < 0.01  # README: label cardinality 4.24
    xml_names = read_mulan_labels(d / "yeast.xml")
    assert sorted(xml_names) == sorted(names) and xml_names != names  # the XML order is not the column order
    X2, Y2, _, names2 = load_arff(d / "yeast-train.arff", label_names=d / "yeast.xml")
    assert names2 == xml_names
    for k, n in enumerate(names2):
        np.testing.assert_array_equal(Y2[:, k], Y_tr[:, names.index(n)])
    np.testing.assert_array_equal(X2, X_tr)
    _, _, _, e_names = load_arff(d / "emotions-train.arff", label_names=d / "emotions.xml")
    assert e_names[0] == "amazed-suprised" and len(e_names) == 6


DENSE = """% a comment
@RELATION 'toy data'

@ATTRIBUTE 'feat one' NUMERIC
@attribute f2 real
@attribute colour {red,'dark blue',green}
@attribute note string
@attribute lab_a {0,1}
@attribute "lab b" {0,1}
@attribute lab_c integer

@DATA
1.5,-2,red,'hello, world',1,0,1
% comment inside data
?,3e-1,'dark blue',x,0,?,0
0,0,green,"y",1,1,1
"""

SPARSE = """@relation sparse
@attribute a numeric
@attribute b numeric
@attribute c {x,y}
@attribute L1 {0,1}
@attribute L2 {0,1}
@attribute L3 {0,1}
@data
{0 1.25,3 1,5 1}
{}
{1 -4, 2 y,\t4 1}
{0 ?,5 1}
"""


def test_dense_corners(tmp_path):
    p = tmp_path / "toy.arff"
    p.write_text(DENSE)
    X, Y, fn, ln = load_arff(p, num_labels=3)
    assert fn == ["feat one", "f2", "colour"]  # the string attribute is not a feature
    assert ln == ["lab_a", "lab b", "lab_c"]
    np.testing.assert_allclose(X[0], [1.5, -2.0, 0.0])
    assert np.isnan(X[1, 0]) and X[1, 1] == pytest.approx(0.3) and X[1, 2] == 1.0
    np.testing.assert_array_equal(Y, [[1, 0, 1], [0, -1, 0], [1, 1, 1]])  # '?' label -> -1 (unknown)
    X2, Y2, _, ln2 = load_arff(p, label_names=["lab b", "lab_a"])
    assert ln2 == ["lab b", "lab_a"]
    np.testing.assert_array_equal(Y2, Y[:, [1, 0]])
    assert X2.shape == (3, 4)  # lab_c becomes a feature


def test_sparse_format(tmp_path):
    p = tmp_path / "sparse.arff"
    p.write_text(SPARSE)
    X, Y, fn, ln = load_arff(p, num_labels=3)
    np.testing.assert_allclose(X[[0, 1, 2]], [[1.25, 0, 0], [0, 0, 0], [0, -4, 1]])
    assert np.isnan(X[3, 0])
    np.testing.assert_array_equal(Y, [[1, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_labels_at_start_meka(tmp_path):
    p = tmp_path / "meka.arff"
    p.write_text("@relation 'm: -C 2'\n@attribute y1 {0,1}\n@attribute y2 {0,1}\n@attribute x1 numeric\n@attribute x2 numeric\n@data\n1,0,0.5,2\n0,1,1.5,3\n")
    X, Y, fn, ln = load_arff(p, num_labels=2, label_location="start")
    assert ln == ["y1", "y2"] and fn == ["x1", "x2"]
    np.testing.assert_array_equal(Y, [[1, 0], [0, 1]])
    np.testing.assert_allclose(X, [[0.5, 2], [1.5, 3]])


def test_errors(tmp_path):
    p = tmp_path / "toy.arff"
    p.write_text(DENSE)
    with pytest.raises(ValueError, match="give `num_labels`"):
        load_arff(p)
    with pytest.raises(ValueError, match=r"label\(s\) \['nope'\] not among the attributes"):
        load_arff(p, label_names=["nope"])
    with pytest.raises(ValueError, match="`num_labels` must be an integer"):
        load_arff(p, num_labels=7)
    with pytest.raises(ValueError, match="`label_location` must be"):
        load_arff(p, num_labels=2, label_location="middle")
    with pytest.raises(ValueError, match="label 'note' must be a numeric or"):
        load_arff(p, label_names=["note"])
    bad = tmp_path / "bad.arff"
    bad.write_text("@relation r\n@attribute a numeric\n@attribute b {0,1}\n@data\n1,0\n2\n")
    with pytest.raises(ValueError, match=r"bad.arff:6: expected 2 values; got 1"):
        load_arff(bad, num_labels=1)
    bad.write_text("@relation r\n@attribute a numeric\n@attribute b {0,1}\n@data\nabc,0\n")
    with pytest.raises(ValueError, match="attribute 'a' is numeric; got 'abc'"):
        load_arff(bad, num_labels=1)
    bad.write_text("@relation r\n@attribute a numeric\n@attribute b numeric\n@data\n1,3\n")
    with pytest.raises(ValueError, match="label 'b' must hold 0/1 values"):
        load_arff(bad, num_labels=1)
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no `@data` section"):
        load_arff(bad, num_labels=1)


def test_no_scipy_needed():
    import jaxmetric.datasets as ds

    src = Path(ds.__file__).read_text()
    assert "import scipy" not in src and "from scipy" not in src
