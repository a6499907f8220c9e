"""Multi-label data: ``fetch_mulan`` against a local HTTP server (download, checksum and
truncation refusal, offline cache), the real Mulan files from the data cache (required in
CI, skipped locally when absent; see ``tests/multilabel_data.py``), and the ARFF reader on
hand-written dense / sparse files covering the format's corners."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from jaxmetric import datasets
from jaxmetric.datasets import MulanSpec, fetch_mulan, load_arff, read_mulan_labels

from tests.multilabel_data import data_dir, mulan


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


# ----------------------------------------------------------------------------- fetch_mulan
def _toy_arff(rows: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    head = "@relation toy\n" + "".join(f"@attribute f{i} numeric\n" for i in range(4))
    head += "".join(f"@attribute L{k} {{0,1}}\n" for k in range(3)) + "@data\n"
    body = "".join(",".join([f"{v:.4f}" for v in rng.normal(size=4)] + [str(b) for b in rng.integers(0, 2, 3)]) + "\n" for _ in range(rows))
    return (head + body).encode()


TOY_FILES = {
    "toy-train.arff": _toy_arff(12, 0),
    "toy-test.arff": _toy_arff(5, 1),
    "toy.xml": b'<?xml version="1.0"?><labels xmlns="http://mulan.sourceforge.net/labels">'
               b'<label name="L2"></label><label name="L0"></label><label name="L1"></label></labels>',
}


class _MulanMirror(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` as ``/toy/<file>``; ``declared_length`` overrides Content-Length (a
    truncated body); every request is counted."""

    files: dict = {}
    declared_length: dict = {}
    requests: list = []

    def do_GET(self):
        type(self).requests.append(self.path)
        body = self.files.get(self.path.removeprefix("/toy/"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.declared_length.get(self.path.removeprefix("/toy/"), len(body))))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(monkeypatch):
    """A Mulan mirror on 127.0.0.1 serving the toy set (pinned by SHA-256 in MULAN_DATASETS)."""
    handler = type("Handler", (_MulanMirror,), {"files": dict(TOY_FILES), "declared_length": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sha = {f: hashlib.sha256(b).hexdigest() for f, b in TOY_FILES.items()}
    monkeypatch.setitem(datasets.MULAN_DATASETS, "toy", MulanSpec(4, 3, 12, 5, sha))
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _write_toy(folder):
    for f, b in TOY_FILES.items():
        (folder / f).write_bytes(b)


def test_fetch_mulan_downloads_checks_and_reuses_the_cache(mirror, tmp_path):
    url, handler = mirror
    data = fetch_mulan("toy", data_home=tmp_path, base_url=url)
    assert sorted(handler.requests) == sorted(f"/toy/{f}" for f in TOY_FILES)
    assert sorted(p.name for p in (tmp_path / "mulan").iterdir()) == sorted(TOY_FILES)  # no .part left
    src = tmp_path / "src"
    src.mkdir()
    _write_toy(src)
    X, Y, fnames, lnames = load_arff(src / "toy-train.arff", label_names=src / "toy.xml")
    np.testing.assert_array_equal(data.X_train, X)
    np.testing.assert_array_equal(data.Y_train, Y)
    assert data.label_names == ["L2", "L0", "L1"] == lnames and data.feature_names == fnames
    assert data.X_test.shape == (5, 4) and data.Y_test.shape == (5, 3) and data.Y_test.dtype == np.int8
    assert data.paths["toy.xml"] == tmp_path / "mulan" / "toy.xml"
    # offline: a second call reads the cache and asks the server nothing, download or not
    n = len(handler.requests)
    for kw in ({}, {"download": False}):
        again = fetch_mulan("toy", data_home=tmp_path, base_url="http://127.0.0.1:9", **kw)
        np.testing.assert_array_equal(again.X_train, data.X_train)
    assert len(handler.requests) == n


def test_fetch_mulan_data_home_from_the_environment(mirror, tmp_path, monkeypatch):
    url, _ = mirror
    monkeypatch.setenv("JAXMETRIC_DATA", str(tmp_path / "env-cache"))
    fetch_mulan("toy", base_url=url)
    assert (tmp_path / "env-cache" / "mulan" / "toy-train.arff").exists()
    assert datasets.get_data_home() == tmp_path / "env-cache"
    assert datasets.get_data_home(tmp_path / "x") == tmp_path / "x"


def test_fetch_mulan_refuses_a_wrong_checksum_and_caches_nothing(mirror, tmp_path):
    url, handler = mirror
    handler.files["toy-test.arff"] = TOY_FILES["toy-test.arff"].replace(b"0.", b"1.", 1)
    with pytest.raises(OSError, match=r"fetch_mulan: 'toy-test.arff' downloaded from http://127.0.0.1:\d+/toy/toy-test.arff has SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}; the file was refused and not cached"):
        fetch_mulan("toy", data_home=tmp_path, base_url=url)
    assert "toy-test.arff" not in {p.name for p in (tmp_path / "mulan").iterdir()}
    assert not list((tmp_path / "mulan").glob("*.part"))


def test_fetch_mulan_refuses_a_truncated_download(mirror, tmp_path):
    url, handler = mirror
    handler.declared_length["toy-train.arff"] = len(TOY_FILES["toy-train.arff"]) + 100
    with pytest.raises(OSError, match=r"fetch_mulan: the download of 'toy-train.arff' from .* was truncated"):
        fetch_mulan("toy", data_home=tmp_path, base_url=url)
    assert sorted(p.name for p in (tmp_path / "mulan").iterdir()) == []  # the train file is fetched first


def test_fetch_mulan_offline_without_cache_names_file_url_and_data_home(mirror, tmp_path):
    with pytest.raises(OSError, match=r"fetch_mulan: could not download 'toy-train.arff' from http://127.0.0.1:9/toy/toy-train.arff into data_home='.*'.*copy the file to"):
        fetch_mulan("toy", data_home=tmp_path, base_url="http://127.0.0.1:9", timeout=5)
    url, _ = mirror
    with pytest.raises(FileNotFoundError, match=r"fetch_mulan: 'toy-train.arff' is not in the data cache .*mulan \(data_home='.*'\) and download=False.*http://127.0.0.1:\d+/toy/toy-train.arff"):
        fetch_mulan("toy", data_home=tmp_path, base_url=url, download=False)
    with pytest.raises(OSError, match=r"could not download 'toy-train.arff' from http://127.0.0.1:\d+/missing/toy/toy-train.arff.*HTTP Error 404"):
        fetch_mulan("toy", data_home=tmp_path, base_url=url + "/missing")


def test_fetch_mulan_replaces_a_corrupted_cache_file_only_when_allowed(mirror, tmp_path):
    url, handler = mirror
    (tmp_path / "mulan").mkdir()
    _write_toy(tmp_path / "mulan")
    (tmp_path / "mulan" / "toy-test.arff").write_bytes(b"garbage")
    with pytest.raises(OSError, match=r"the cached .*toy-test.arff does not have the expected SHA-256 [0-9a-f]{64}; delete it, or call with download=True"):
        fetch_mulan("toy", data_home=tmp_path, base_url=url, download=False)
    fetch_mulan("toy", data_home=tmp_path, base_url=url)
    assert handler.requests == ["/toy/toy-test.arff"]
    assert (tmp_path / "mulan" / "toy-test.arff").read_bytes() == TOY_FILES["toy-test.arff"]


def test_fetch_mulan_unpinned_file_must_have_the_published_shape(mirror, tmp_path, monkeypatch):
    url, _ = mirror
    monkeypatch.setitem(datasets.MULAN_DATASETS, "toy", MulanSpec(4, 3, 13, 5, {f: None for f in TOY_FILES}))
    with pytest.raises(OSError, match=r"toy-train.arff holds X \(12, 4\) and Y \(12, 3\); toy's train split has X \(13, 4\) and Y \(13, 3\)"):
        fetch_mulan("toy", data_home=tmp_path, base_url=url)
    assert not (tmp_path / "mulan" / "toy-train.arff").exists()  # not trusted, not kept


def test_fetch_mulan_unknown_name():
    with pytest.raises(ValueError, match=r"fetch_mulan: `name` must be one of \['emotions', 'scene', 'yeast'\]; got 'yeest'"):
        fetch_mulan("yeest")


def test_mulan_registry_pins_the_cached_real_files():
    """yeast and emotions as cached equal the published checksums and shapes."""
    for name in ("yeast", "emotions"):
        spec = datasets.MULAN_DATASETS[name]
        data = mulan(name)
        for f, sha in spec.sha256.items():
            assert hashlib.sha256(data.paths[f].read_bytes()).hexdigest() == sha
        assert data.X_train.shape == (spec.train_rows, spec.num_features) and data.Y_test.shape == (spec.test_rows, spec.num_labels)
