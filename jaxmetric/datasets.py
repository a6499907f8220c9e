"""Multi-label benchmark data: Mulan's data sets fetched into a local cache, and an ARFF reader.

``data = fetch_mulan("yeast")`` downloads yeast's train/test split once (from the Mulan
project's public data folder), checks it, caches it and returns the arrays and label names;
``X, Y, feature_names, label_names = load_arff("my-train.arff", num_labels=14)`` reads a
local file.

The ARFF parser is written by hand (scipy's ``scipy.io.arff`` is not a jaxmetric dependency
and reads no sparse ARFF). It reads dense rows (``1.5,0,?,...``) and sparse rows
(``{0 1.5,7 1}``: omitted values are 0, or the first value of a nominal attribute),
``%`` comments, quoted names and values, numeric/real/integer, nominal ``{a,b}`` and
string/date attributes, case-insensitive keywords.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["fetch_mulan", "get_data_home", "MulanDataset", "MulanSpec", "MULAN_DATASETS", "MULAN_URL", "load_arff", "read_mulan_labels", "read_arff", "ArffData"]


@dataclass
class ArffData:
    """A parsed ARFF file: ``values`` is float64 ``[n, num_attributes]`` (nominal attributes as
    the index of their value, missing values NaN)."""

    relation: str
    names: list[str]
    kinds: list[str]  # "numeric", "nominal", "string"
    nominal_values: list[list[str] | None]
    values: np.ndarray


_TOKEN = re.compile(r"""\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([^,\s{}]+))""")


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", s[1:-1])
    return s


def _split_values(line: str) -> list[str]:
    """Splits a dense data row or a nominal list at commas, honouring quotes."""
    out, cur, quote, i = [], [], None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and i + 1 < len(line):
                cur.append(line[i : i + 2])
                i += 2
                continue
            if c == quote:
                quote = None
            cur.append(c)
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == ",":
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur).strip())
    return out


def _parse_attribute(rest: str, path: str, lineno: int):
    rest = rest.strip()
    if rest[0] in "'\"":
        q = rest[0]
        j = 1
        while j < len(rest) and not (rest[j] == q and rest[j - 1] != "\\"):
            j += 1
        name, type_part = _unquote(rest[: j + 1]), rest[j + 1 :].strip()
    else:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise ValueError(f"load_arff: {path}:{lineno}: `@attribute` needs a name and a type; got {rest!r}")
        name, type_part = parts
    low = type_part.lower()
    if type_part.startswith("{"):
        end = type_part.rfind("}")
        values = [_unquote(v) for v in _split_values(type_part[1:end]) if v != ""]
        return name, "nominal", values
    if low.startswith(("numeric", "real", "integer")):
        return name, "numeric", None
    if low.startswith(("string", "date")):
        return name, "string", None
    raise ValueError(f"load_arff: {path}:{lineno}: unsupported attribute type {type_part!r} for {name!r}")


def _convert(token: str, kind: str, nominal: list[str] | None, name: str, path: str, lineno: int) -> float:
    token = token.strip()
    if token == "?" or token == "":
        return np.nan
    if kind == "numeric":
        try:
            return float(token)
        except ValueError:
            raise ValueError(f"load_arff: {path}:{lineno}: attribute {name!r} is numeric; got {token!r}") from None
    if kind == "nominal":
        v = _unquote(token)
        try:
            return float(nominal.index(v))
        except ValueError:
            raise ValueError(f"load_arff: {path}:{lineno}: attribute {name!r} must be one of {nominal}; got {v!r}") from None
    return np.nan  # string / date attributes are not numeric features


def read_arff(path: str | os.PathLike) -> ArffData:
    """Parses a dense or sparse ARFF file (see the module docstring)."""
    path = os.fspath(path)
    names: list[str] = []
    kinds: list[str] = []
    nominal: list[list[str] | None] = []
    relation = ""
    rows: list[np.ndarray | None] = []
    dense_rows: list[tuple[int, int, list[str]]] = []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("%"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@relation"):
                    relation = _unquote(line[len("@relation") :])
                elif low.startswith("@attribute"):
                    name, kind, values = _parse_attribute(line[len("@attribute") :], path, lineno)
                    names.append(name)
                    kinds.append(kind)
                    nominal.append(values)
                elif low.startswith("@data"):
                    in_data = True
                    if not names:
                        raise ValueError(f"load_arff: {path}: `@data` before any `@attribute`")
                continue
            if line.startswith("{"):
                end = line.rfind("}")
                row = np.array([0.0 if k != "string" else np.nan for k in kinds])  # sparse default: 0 / first nominal value
                body = line[1:end].strip()
                if body:
                    for item in _split_values(body):
                        if not item:
                            continue
                        parts = item.split(None, 1)
                        idx_s, val = parts[0], (parts[1] if len(parts) > 1 else "")
                        try:
                            idx = int(idx_s)
                        except ValueError:
                            raise ValueError(f"load_arff: {path}:{lineno}: sparse entry must be 'index value'; got {item!r}") from None
                        if not 0 <= idx < len(names):
                            raise ValueError(f"load_arff: {path}:{lineno}: sparse index {idx} out of range [0, {len(names)})")
                        row[idx] = _convert(val, kinds[idx], nominal[idx], names[idx], path, lineno)
            else:
                vals = _split_values(line) if ("'" in line or '"' in line) else [v.strip() for v in line.split(",")]
                if len(vals) != len(names):
                    raise ValueError(f"load_arff: {path}:{lineno}: expected {len(names)} values; got {len(vals)}")
                dense_rows.append((len(rows), lineno, vals))
                row = None  # converted column by column below
            rows.append(row)
    if not in_data:
        raise ValueError(f"load_arff: {path}: no `@data` section; is this an ARFF file?")
    values = np.zeros((len(rows), len(names)))
    for i, row in enumerate(rows):
        if row is not None:
            values[i] = row
    if dense_rows:
        where_rows = np.array([r for r, _, _ in dense_rows])
        for j in range(len(names)):
            col = [vals[j] for _, _, vals in dense_rows]
            converted = None
            if kinds[j] == "numeric":
                try:
                    converted = np.asarray(col, dtype=np.float64)  # fast path: no '?' and no quotes
                except ValueError:
                    converted = None
            if converted is None:
                converted = np.array([_convert(v, kinds[j], nominal[j], names[j], path, ln) for (_, ln, _), v in zip(dense_rows, col)])
            values[where_rows, j] = converted
    return ArffData(relation=relation, names=names, kinds=kinds, nominal_values=nominal, values=values)


def read_mulan_labels(path: str | os.PathLike) -> list[str]:
    """Label names from a Mulan XML label file (``<labels><label name="..."/>...``), in the
    file's order; nested (hierarchical) labels are flattened depth-first."""
    root = ET.parse(os.fspath(path)).getroot()
    return [el.attrib["name"] for el in root.iter() if el.tag.split("}")[-1] == "label" and "name" in el.attrib]


def _label_value(col: np.ndarray, kind: str, nominal, name: str) -> np.ndarray:
    if kind == "string":
        raise ValueError(f"load_arff: label {name!r} must be a numeric or {{0,1}} nominal attribute; got a string attribute")
    if kind == "nominal":
        if not all(_is_number(v) for v in nominal):
            raise ValueError(f"load_arff: label {name!r} must be a {{0,1}} attribute; got nominal values {nominal}")
        vals = np.array([float(v) for v in nominal] + [np.nan])
        idx = np.where(np.isnan(col), len(nominal), col).astype(int)
        col = vals[idx]
    out = np.full(col.shape, -1, np.int8)
    ok = ~np.isnan(col)
    bad = ok & ~np.isin(col, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"load_arff: label {name!r} must hold 0/1 values; got {col[bad][0]!r}")
    out[ok] = col[ok].astype(np.int8)
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_arff(
    path: str | os.PathLike, num_labels: int | None = None,
    label_names: Sequence[str] | str | os.PathLike | None = None, label_location: str = "end",
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Loads a multi-label data set in Mulan (or MEKA) ARFF format.

    The labels are picked by ``label_names`` when given, else as the ``num_labels`` first or
    last attributes (``label_location``: ``"end"``, Mulan's convention, or ``"start"``, MEKA's
    ``-C`` convention); every other numeric or nominal attribute is a feature.

    Args:
      path: the ``.arff`` file (dense or sparse).
      num_labels: the number of label attributes (with ``label_location``).
      label_names: the label attribute names (a sequence), or the path of a Mulan ``.xml``
        label file. ``Y[:, k]`` is then the label ``label_names[k]`` (the XML's order, which
        need not be the column order).
      label_location: ``"end"`` or ``"start"`` (used with ``num_labels`` only).

    Returns:
      ``(X, Y, feature_names, label_names)``: ``X`` float32 ``[n, d]`` (nominal features as
      value indices, missing values NaN), ``Y`` int8 ``[n, L]`` in {0, 1} with -1 for a
      missing label value (``?``; the losses treat -1 as unknown), and the two name lists.
    """
    fn = "load_arff"
    if label_location not in ("end", "start"):
        raise ValueError(f"{fn}: `label_location` must be 'end' or 'start'; got {label_location!r}")
    if num_labels is None and label_names is None:
        raise ValueError(f"{fn}: give `num_labels` (the labels are the last attributes in Mulan files) or `label_names` (a list or the .xml label file); got neither")
    data = read_arff(path)
    n_attr = len(data.names)
    if label_names is not None:
        if isinstance(label_names, (str, os.PathLike)):
            names = read_mulan_labels(label_names)
        else:
            names = [str(n) for n in label_names]
        index = {n: i for i, n in enumerate(data.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise ValueError(f"{fn}: label(s) {missing[:5]} not among the attributes of {os.fspath(path)!r}")
        if num_labels is not None and num_labels != len(names):
            raise ValueError(f"{fn}: `num_labels`={num_labels} but `label_names` has {len(names)} names")
        label_idx = [index[n] for n in names]
    else:
        if not isinstance(num_labels, (int, np.integer)) or not 0 < num_labels < n_attr:
            raise ValueError(f"{fn}: `num_labels` must be an integer in [1, {n_attr - 1}] for {os.fspath(path)!r}; got {num_labels!r}")
        label_idx = list(range(n_attr - num_labels, n_attr)) if label_location == "end" else list(range(num_labels))
    label_set = set(label_idx)
    feat_idx = [i for i in range(n_attr) if i not in label_set and data.kinds[i] != "string"]
    X = data.values[:, feat_idx].astype(np.float32)
    Y = np.stack(
        [_label_value(data.values[:, i], data.kinds[i], data.nominal_values[i], data.names[i]) for i in label_idx], axis=1
    ) if label_idx else np.zeros((data.values.shape[0], 0), np.int8)
    return X, Y, [data.names[i] for i in feat_idx], [data.names[i] for i in label_idx]


# ----------------------------------------------------------------------------- fetch_mulan

#: The Mulan project's data folder (github.com/tsoumakas/mulan); a set's files lie under
#: ``{MULAN_URL}/{name}/``.
MULAN_URL = "https://raw.githubusercontent.com/tsoumakas/mulan/master/data/multi-label"


@dataclass(frozen=True)
class MulanSpec:
    """What a fetched Mulan set must be: its files with their SHA-256 (``None`` where no
    checksum is pinned yet: the file is then accepted only if it parses to the shapes below),
    and the shapes of its train and test splits."""

    num_features: int
    num_labels: int
    train_rows: int
    test_rows: int
    sha256: dict


#: The data sets ``fetch_mulan`` knows. Shapes from the Mulan project's table; checksums of
#: the files as published there.
MULAN_DATASETS = {
    "yeast": MulanSpec(103, 14, 1500, 917, {
        "yeast-train.arff": "e759dc991ff54694a4ff9c4314f3be0d6fd2b1994a4b563f57e416394c6aebbd",
        "yeast-test.arff": "4aaac102bff9669a765bf0b378602e5cc8c3b181048282e2f003117b496d552a",
        "yeast.xml": "c3056cc26444b5158b1588d1b73bec9c45429e10f0957ad085903423cb81f247",
    }),
    "emotions": MulanSpec(72, 6, 391, 202, {
        "emotions-train.arff": "bbe704106c79bb8fb99c1d1d2e9bde081d6a2daeb01f100862f11fd91a3c1f98",
        "emotions-test.arff": "f13d4b746b7b5c8eb484bd751d6ac463d4560dff998a93516a5c1fe35daf6c8f",
        "emotions.xml": "dbce8e6ccbbb2fcbfd9e9edbb230d7ed12692c6e13f59fdbc0161fa9b6cf2dc0",
    }),
    # No checksum of scene's files is pinned yet: a download is accepted when it parses to
    # scene's published shapes (1211 / 1196 rows, 294 features, 6 labels named by the XML).
    "scene": MulanSpec(294, 6, 1211, 1196, {"scene-train.arff": None, "scene-test.arff": None, "scene.xml": None}),
}


@dataclass(frozen=True)
class MulanDataset:
    """A Mulan data set's published train/test split, as ``fetch_mulan`` returns it.

    ``X_*`` are float32 ``[n, num_features]``; ``Y_*`` int8 ``[n, num_labels]`` in {0, 1}
    (-1 would mark an unknown label; the Mulan sets here have none), columns in the order of
    ``label_names`` (the set's XML file). ``paths`` maps each file name to its cached copy.
    """

    name: str
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    feature_names: list
    label_names: list
    paths: dict


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The data cache: ``data_home`` if given, else ``$JAXMETRIC_DATA``, else
    ``~/.cache/jaxmetric`` (created if missing)."""
    home = Path(data_home if data_home is not None else os.environ.get("JAXMETRIC_DATA") or Path.home() / ".cache" / "jaxmetric")
    home = home.expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, expected_sha: str | None, timeout: float) -> None:
    """Downloads ``url`` to ``dest`` through a temporary file in the same folder, so an
    interrupted, truncated or wrong download never takes the cached file's place."""
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected_len = response.headers.get("Content-Length")
            received = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                received += len(chunk)
        if expected_len is not None and received != int(expected_len):
            raise OSError(f"fetch_mulan: the download of {dest.name!r} from {url} was truncated: {received} of {expected_len} bytes; nothing was cached, try again")
        if expected_sha is not None and (got := _sha256(Path(tmp))) != expected_sha:
            raise OSError(f"fetch_mulan: {dest.name!r} downloaded from {url} has SHA-256 {got}, expected {expected_sha}; the file was refused and not cached")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _cached_file(name: str, filename: str, expected_sha: str | None, folder: Path, base_url: str, download: bool, timeout: float) -> Path:
    path = folder / filename
    url = f"{base_url.rstrip('/')}/{name}/{filename}"
    if path.exists():
        if expected_sha is None or _sha256(path) == expected_sha:
            return path
        if not download:
            raise OSError(f"fetch_mulan: the cached {path} does not have the expected SHA-256 {expected_sha}; delete it, or call with download=True to fetch it again from {url}")
    elif not download:
        raise FileNotFoundError(f"fetch_mulan: {filename!r} is not in the data cache {folder} (data_home={str(folder.parent)!r}) and download=False; call with download=True, or put the file there by hand from {url}")
    try:
        _download(url, path, expected_sha, timeout)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        raise OSError(f"fetch_mulan: could not download {filename!r} from {url} into data_home={str(folder.parent)!r} ({e}); when offline, copy the file to {path} by hand") from e
    return path


def fetch_mulan(
    name: str, *, data_home: str | os.PathLike | None = None, download: bool = True, base_url: str | None = None,
    timeout: float = 60.0,
) -> MulanDataset:
    """Loads a Mulan multi-label data set's train/test split, downloading it once into a cache.

    In the style of scikit-learn's ``fetch_*``: the first call downloads the set's files from
    the Mulan project's public data folder (:data:`MULAN_URL`) into
    ``{data_home}/mulan/``, checks each against its SHA-256 (a truncated or altered download
    is refused and not cached), and later calls read the cache, offline too.

    Args:
      name: one of :data:`MULAN_DATASETS`: ``"yeast"`` (103 features, 14 labels, 1500 / 917
        rows), ``"emotions"`` (72, 6, 391 / 202), ``"scene"`` (294, 6, 1211 / 1196).
      data_home: the cache folder; default ``$JAXMETRIC_DATA``, else ``~/.cache/jaxmetric``
        (see :func:`get_data_home`).
      download: fetch files missing from the cache; with ``False`` a missing file raises
        ``FileNotFoundError`` naming it, its URL and ``data_home``.
      base_url: a mirror of Mulan's data folder with the same layout (``{base_url}/{name}/{file}``).
      timeout: seconds to wait for the server, per file.

    Returns:
      A :class:`MulanDataset` (``X_train, Y_train, X_test, Y_test, feature_names,
      label_names, paths``), labels in the order of the set's XML label file.

    Example::

        data = jaxmetric.datasets.fetch_mulan("yeast")
        logits = model.apply(params, data.X_train)
        loss = jaxmetric.bce_loss(logits, data.Y_train)
    """
    fn = "fetch_mulan"
    if name not in MULAN_DATASETS:
        raise ValueError(f"{fn}: `name` must be one of {sorted(MULAN_DATASETS)}; got {name!r}")
    spec = MULAN_DATASETS[name]
    folder = get_data_home(data_home) / "mulan"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {f: _cached_file(name, f, sha, folder, base_url or MULAN_URL, download, timeout) for f, sha in spec.sha256.items()}
    xml = paths[f"{name}.xml"]
    splits = {}
    for split, rows in (("train", spec.train_rows), ("test", spec.test_rows)):
        path = paths[f"{name}-{split}.arff"]
        try:
            X, Y, feature_names, label_names = load_arff(path, label_names=xml)
        except ValueError as e:
            unpinned = spec.sha256[path.name] is None
            if unpinned:
                path.unlink()
            raise OSError(f"{fn}: {path} is not a valid {name} file ({e}){'; it was removed from the cache' if unpinned else ''}") from e
        if X.shape != (rows, spec.num_features) or Y.shape != (rows, spec.num_labels):
            if spec.sha256[path.name] is None:
                path.unlink()  # an unpinned file is only trusted when its shape is right
            raise OSError(f"{fn}: {path} holds X {X.shape} and Y {Y.shape}; {name}'s {split} split has X ({rows}, {spec.num_features}) and Y ({rows}, {spec.num_labels})")
        splits[split] = (X, Y)
    return MulanDataset(
        name=name, X_train=splits["train"][0], Y_train=splits["train"][1], X_test=splits["test"][0], Y_test=splits["test"][1],
        feature_names=feature_names, label_names=label_names, paths=paths,
    )
