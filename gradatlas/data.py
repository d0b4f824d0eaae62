"""MNIST data layer: readers (the copy shipped in resources/mnist/, IDX folder, Keras .npz,
download), validation, prepared cache, splits.

The pipeline reads MNIST once (`load`, in the `prepare_data` rule), writes it to
`resources/prepared/<key>/` as plain .npy files (`prepare`; the key is `gradatlas.config.data_key`,
a digest of the data's content), and every training job memory-maps that cache (`open_prepared`,
which checks it against the fingerprints recorded when it was written) and cuts its fixed
train/validation/test split from it (`split`).

Every problem with the input data raises `DataError`, whose message names the offending file by
its full path and says what is wrong, so a user can act on it without reading a traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import shutil
import struct
import urllib.request
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A problem with MNIST input data; the message names the file and what is wrong with it."""


# Array key -> canonical IDX file name (without .gz). The keys are also the .npz keys (as in
# keras.datasets.mnist) and the .npy names of the prepared cache.
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# Array key -> sha256 of the canonical FILES[key] + ".gz" (the published TensorFlow/CVDF checksums).
SHA256 = {
    "x_train": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "y_train": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "x_test": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "y_test": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

# Array key -> sha256 of the uncompressed canonical IDX file (header + bytes): what `fingerprint`
# gives for the canonical arrays, whatever format (.gz, raw IDX, .npz) they came in.
SHA256_IDX = {
    "x_train": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "y_train": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "x_test": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "y_test": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
ROLES = {
    "x_train": "the training images",
    "y_train": "the training labels",
    "x_test": "the test images",
    "y_test": "the test labels",
}

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
SOURCES = ("bundled", "download", "idx", "npz")
# The canonical MNIST shipped with the project (source "bundled"): the four .gz files, sha256-checked,
# in the workflow's folder (the working folder of snakemake), or beside the package of a checkout.
BUNDLED = next(
    (
        p.resolve()
        for p in (Path("resources/mnist"), Path(__file__).resolve().parent.parent / "resources" / "mnist")
        if p.is_dir()
    ),
    Path("resources/mnist").resolve(),
)
# What to do when MNIST cannot be fetched, for the download error.
OFFLINE_HINT = (
    "GradAtlas ships MNIST: data.source: bundled (the default) reads resources/mnist/ without network; "
    "or use a local copy of the four files with data.source: idx and data.path, e.g. "
    "`make demo MNIST=/path/to/mnist` or `snakemake --cores all --config 'data={source: idx, path: /path/to/mnist}'`"
)

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# IDX magic number: two zero bytes, a data-type byte (0x08 = unsigned byte), a dimension-count byte.
_IDX_UBYTE = 0x08
_IDX_NDIMS = (1, 3)  # labels N; images N x rows x cols
_GZIP_MAGIC = b"\x1f\x8b"


# eq=False: the fields are numpy arrays, whose `==` is elementwise, so a generated __eq__/__hash__
# would raise instead of comparing.
@dataclass(frozen=True, eq=False)
class MNIST:
    """The four raw arrays: uint8 images N x 28 x 28 and uint8 labels N, for train and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True, eq=False)
class Split:
    """Model-ready arrays: float32 images flattened to N x 784 and scaled to [0, 1]; int32 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _error(path, problem: str) -> DataError:
    return DataError(f"{Path(path).absolute()}: {problem}")


def sha256_of(path) -> str:
    """Hex sha256 of a file's bytes; DataError naming the file when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None


def fingerprint(array: np.ndarray) -> str:
    """sha256 of the array's uncompressed IDX encoding (magic, sizes, bytes): the same for a canonical
    array whether it was read from a .gz, a raw IDX file or an .npz (see SHA256_IDX)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    digest = hashlib.sha256(bytes([0, 0, _IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


# --- IDX files -----------------------------------------------------------------------------------
def read_idx(path) -> np.ndarray:
    """One MNIST IDX file (gzip-compressed or raw) as a read-only uint8 array.

    Accepts the two MNIST layouts only: labels (magic 0x00000801, N) and images (magic 0x00000803,
    N x rows x cols). The data must fill exactly what the header announces, so a truncated
    download or a file with junk appended is caught here rather than as wrong pixels later.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None
    # Also sniff the content: a compressed file renamed without .gz is still read correctly.
    if path.suffix == ".gz" or data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _error(path, f"corrupt gzip file ({exc}); delete it and fetch a fresh copy") from None
    return _parse_idx(path, data)


def _parse_idx(path: Path, data: bytes) -> np.ndarray:
    if len(data) < 4:
        raise _error(path, f"too short to be an IDX file ({len(data)} bytes)")
    zeros, dtype, ndim = data[:2], data[2], data[3]
    if zeros != b"\x00\x00":
        raise _error(
            path,
            f"not an IDX file: magic number 0x{data[:4].hex()} should be 0x00000801 (labels) or 0x00000803 (images)",
        )
    if dtype != _IDX_UBYTE:
        raise _error(path, f"IDX data type 0x{dtype:02x} is not the unsigned bytes (0x08) MNIST uses")
    if ndim not in _IDX_NDIMS:
        raise _error(path, f"IDX file has {ndim} dimensions, but MNIST files have 1 (labels) or 3 (images)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise _error(path, f"truncated inside its header ({len(data)} of {header_size} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected, actual = int(np.prod(shape)), len(data) - header_size
    if actual < expected:
        raise _error(
            path, f"file is truncated: the header announces {expected} bytes of data but only {actual} are present"
        )
    if actual > expected:
        raise _error(
            path, f"{actual - expected} bytes of trailing data follow the {expected} bytes the header announces"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def _find_idx_file(folder: Path, key: str) -> Path:
    """The file holding FILES[key] in folder: compressed first, then raw, then the old dotted names."""
    name = FILES[key]
    old_name = name.replace("-idx", ".idx")  # as in the 1998 distribution: train-images.idx3-ubyte
    candidates = [folder / n for n in (f"{name}.gz", name, f"{old_name}.gz", old_name)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if os.path.lexists(candidate):  # a folder, a broken or looping link, something unreadable
            raise _error(candidate, _not_a_file(candidate))
    others = ", ".join(c.name for c in candidates[1:])
    raise _error(candidates[0], f"MNIST file not found (also looked for {others} in that folder)")


def _not_a_file(path: Path) -> str:
    """Why an existing name is not a readable regular file."""
    try:
        path.stat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return "is not a regular file" + (" (it is a folder)" if path.is_dir() else "")


def read_idx_folder(folder) -> MNIST:
    """The four MNIST IDX files of a folder, validated."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _error(folder, "MNIST folder not found" if not folder.exists() else "not a folder")
    paths = {key: _find_idx_file(folder, key) for key in FILES}
    mnist = MNIST(**{key: read_idx(path) for key, path in paths.items()})
    validate(mnist, {key: str(path.absolute()) for key, path in paths.items()})
    return mnist


# --- Keras .npz ----------------------------------------------------------------------------------
def read_npz(path) -> MNIST:
    """A Keras-style mnist.npz (arrays x_train, y_train, x_test, y_test), validated."""
    path = Path(path)
    if not path.is_file():
        raise _error(path, _not_a_file(path) if os.path.lexists(path) else "no such file")
    try:
        with open(path, "rb") as f:
            f.read(4)
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None
    # np.load would otherwise try to unpickle a non-zip file or return a single .npy array.
    if not zipfile.is_zipfile(path):
        raise _error(path, "not an .npz archive (it is not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            present = archive.files
            arrays = {key: archive[key] for key in FILES if key in present}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _error(path, f"unreadable .npz archive ({exc})") from None
    missing = [key for key in FILES if key not in arrays]
    if missing:
        raise _error(path, f"the .npz archive lacks {', '.join(missing)} (it holds: {', '.join(present) or 'nothing'})")
    mnist = MNIST(**arrays)
    validate(mnist, str(path.absolute()))
    return mnist


# --- download ------------------------------------------------------------------------------------
def download(url_base: str | None, folder) -> Path:
    """Fetch the four canonical .gz files from url_base (None: MNIST_URL) into folder; returns folder.

    A file already present with the right sha256 is not fetched again. Each download goes to a
    temporary file in the same folder and is moved into place only after its sha256 matches, so
    the folder never holds a partial or wrong file under a canonical name.
    """
    url_base = (url_base or MNIST_URL).rstrip("/") + "/"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in FILES.items():
        target = folder / f"{name}.gz"
        if target.is_file() and sha256_of(target) == SHA256[key]:
            continue
        _fetch(url_base + target.name, target, SHA256[key])
    return folder


def _fetch(url: str, target: Path, expected_sha256: str) -> None:
    # A hidden sibling (same file system, so os.replace is atomic); not tempfile.mkstemp, whose
    # 0600 mode would follow the file into place and hide the cache from other users.
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        try:
            with open(partial, "xb") as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out, 1 << 20)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: not a URL urllib can open
            raise _error(target, f"could not download it from {url} ({exc}). {OFFLINE_HINT}") from None
        actual = sha256_of(partial)
        if actual != expected_sha256:
            raise _error(
                target,
                f"the file downloaded from {url} has sha256 {actual}, expected {expected_sha256}, so it was discarded",
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)  # no-op once os.replace has moved it into place


# --- the copy shipped with the project -----------------------------------------------------------
def read_bundled(folder=None) -> MNIST:
    """The canonical MNIST shipped in resources/mnist/ (or folder): each .gz must have its published
    sha256, checked before it is read; a file holding another canonical file is named as swapped."""
    folder = Path(folder or BUNDLED)
    restore = (
        "restore the shipped copy with `git checkout -- resources/mnist`, or set data.source to download, idx or npz"
    )
    by_sha = {sha: key for key, sha in SHA256.items()}
    for key, name in FILES.items():
        path = folder / f"{name}.gz"
        if not path.is_file():
            problem = _not_a_file(path) if os.path.lexists(path) else "MNIST file shipped with GradAtlas is missing"
            raise _error(path, f"{problem}; {restore}")
        actual = sha256_of(path)
        if actual == SHA256[key]:
            continue
        other = by_sha.get(actual)
        if other is not None:
            raise _error(
                path,
                f"holds the canonical {FILES[other]}.gz ({ROLES[other]}), not {ROLES[key]}: it and "
                f"{(folder / (FILES[other] + '.gz')).absolute()} are swapped; {restore}",
            )
        raise _error(path, f"has sha256 {actual}, expected {SHA256[key]} (damaged or changed); {restore}")
    return read_idx_folder(folder)


def check_roles(mnist: MNIST, origin: str | Mapping[str, str], allow_unusual_split: bool = False) -> None:
    """Refuse train and test (or images and labels) files in each other's place.

    An array whose content is a canonical MNIST file in another role (say, the test images read from
    the training-images file) is refused naming both files. Other data passes only when its training
    split is larger than its test split, or with allow_unusual_split (config data.allow_unusual_split).
    """
    names = {key: f"{origin} [{key}]" for key in FILES} if isinstance(origin, str) else dict(origin)
    by_fingerprint = {sha: key for key, sha in SHA256_IDX.items()}
    known = {}
    for key in FILES:
        role = by_fingerprint.get(fingerprint(getattr(mnist, key)))
        if role is not None and role != key:
            raise DataError(
                f"{names[key]}: holds the canonical {FILES[role]} ({ROLES[role]}), not {ROLES[key]}; "
                f"its place is {names[role]}: the two look swapped"
            )
        known[key] = role == key
    if all(known.values()) or allow_unusual_split:
        return
    n_train, n_test = len(mnist.x_train), len(mnist.x_test)
    if n_train <= n_test:
        raise DataError(
            f"{names['x_train']}: the training split has {n_train} images, not more than the {n_test} of the "
            f"test split ({names['x_test']}): are the training and test files swapped? If this is intended, "
            "set data.allow_unusual_split: true"
        )


# --- validation and loading ----------------------------------------------------------------------
def validate(mnist: MNIST, origin: str | Mapping[str, str]) -> None:
    """Check shapes, dtypes, matching counts and label range; raise DataError otherwise.

    origin says where the arrays came from, for the messages: one string for all four (say, an
    .npz file; the message then adds the array key) or a mapping from array key to its file.
    Any number of images per split is accepted, so small synthetic data sets work too.
    """
    if isinstance(origin, str):
        names = {key: f"{origin} [{key}]" for key in FILES}
    else:
        names = {key: origin[key] for key in FILES}

    def fail(key: str, problem: str) -> DataError:
        return DataError(f"{names[key]}: {problem}")

    for images_key, labels_key in (("x_train", "y_train"), ("x_test", "y_test")):
        images, labels = getattr(mnist, images_key), getattr(mnist, labels_key)
        if images.dtype != np.uint8:
            raise fail(images_key, f"images have dtype {images.dtype}, expected uint8")
        if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
            raise fail(images_key, f"images have shape {images.shape}, expected N x 28 x 28")
        if len(images) == 0:
            raise fail(images_key, "holds no images")
        if labels.dtype != np.uint8:
            raise fail(labels_key, f"labels have dtype {labels.dtype}, expected uint8")
        if labels.ndim != 1:
            raise fail(labels_key, f"labels have shape {labels.shape}, expected one label per image")
        if len(labels) != len(images):
            raise fail(labels_key, f"holds {len(labels)} labels but {names[images_key]} holds {len(images)} images")
        out_of_range = np.flatnonzero(labels >= NUM_CLASSES)
        if out_of_range.size:
            first = out_of_range[0]
            raise fail(
                labels_key,
                f"label {labels[first]} at position {first} is not a digit 0..9 "
                f"({out_of_range.size} labels are out of range)",
            )


def content_digest(source: str, path) -> str:
    """A digest of the data's content, cheap enough for every snakemake start: bundled and download
    data are the canonical files (checked when read), so their digest is that of the published
    sha256s; an IDX folder's is that of its four files' sha256s (a canonical file stored raw counts
    as its .gz), an .npz's that of the file. Raises DataError naming a file that cannot be read."""
    _check_source(source)
    if source in ("bundled", "download"):
        shas = [SHA256[key] for key in FILES]
    elif source == "npz":
        shas = ["npz", sha256_of(path)]
    else:
        folder = Path(path)
        if not folder.is_dir():
            raise _error(folder, "MNIST folder not found" if not folder.exists() else "not a folder")
        raw_to_gz = {SHA256_IDX[key]: SHA256[key] for key in FILES}
        shas = []
        for key in FILES:
            sha = sha256_of(_find_idx_file(folder, key))
            shas.append(raw_to_gz.get(sha, sha))
    return hashlib.sha256("|".join(shas).encode()).hexdigest()


def train_count(source: str, path) -> int | None:
    """How many training images an "idx" or "npz" source has, from the file headers alone (cheap at
    every snakemake start, so that a too large data.train_subset stops before any job); None where
    they cannot be read: prepare_data then names the problem."""
    try:
        if source == "npz":
            with zipfile.ZipFile(path) as archive, archive.open("x_train.npy") as f:
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                return read_header(f)[0][0]
        with open(_find_idx_file(Path(path), "x_train"), "rb") as f:
            head = f.read(2)
            f.seek(0)
            with gzip.open(f) if head == _GZIP_MAGIC else contextlib.nullcontext(f) as idx:
                return struct.unpack(">I", idx.read(8)[4:8])[0]
    except (OSError, ValueError, KeyError, IndexError, EOFError, struct.error, zipfile.BadZipFile, zlib.error):
        return None


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"data.source = {source!r} is not one of {', '.join(SOURCES)}")


def load(source: str, path, url: str | None = None, cache=None, allow_unusual_split: bool = False) -> MNIST:
    """MNIST from the configured source, validated (every reader validates what it returns) and
    checked for swapped files (`check_roles`).

    source "bundled": the canonical copy in path (None: BUNDLED), every file sha256-checked;
    "idx": path is a folder of IDX files; "npz": path is a Keras-style .npz; "download":
    the files are fetched from url (None: MNIST_URL) into cache (None: path) unless already there.
    """
    _check_source(source)
    if source == "npz":
        mnist = read_npz(path)
        check_roles(mnist, str(Path(path).absolute()), allow_unusual_split)
        return mnist
    if source == "bundled":
        mnist = read_bundled(path)
    elif source == "idx":
        mnist = read_idx_folder(path)
    else:
        mnist = read_idx_folder(download(url, _idx_folder(source, path, cache)))
    folder = Path(_idx_folder(source, path or BUNDLED, cache))
    names = {key: str(_find_idx_file(folder, key).absolute()) for key in FILES}
    check_roles(mnist, names, allow_unusual_split)
    return mnist


def _idx_folder(source: str, path, cache):
    """Where the IDX files of an "idx" or "download" source live: download keeps them in cache (None: path)."""
    return cache if source == "download" and cache is not None else path


def describe_source(source: str, path, url: str | None = None, cache=None) -> dict:
    """Provenance for `prepare`, taking the arguments `load` took: kind, location, sha256 per input file."""
    _check_source(source)
    if source == "npz":
        location = Path(path)
        inputs = [location]
    else:
        location = Path(_idx_folder(source, path or BUNDLED, cache))
        inputs = [_find_idx_file(location, key) for key in FILES]
    record = {"source": source, "path": str(location.absolute())}
    if source == "download":
        record["url"] = url or MNIST_URL
    record["sha256"] = {p.name: sha256_of(p) for p in inputs}
    return record


# --- prepared cache ------------------------------------------------------------------------------
def prepare(mnist: MNIST, out_dir, provenance: dict) -> None:
    """Write out_dir/{x_train,y_train,x_test,y_test}.npy and source.json (provenance, counts and
    each array's `fingerprint`, which `open_prepared` checks).

    Everything is written into a hidden sibling folder that is then renamed to out_dir (replacing
    an existing one), so a crash never leaves a half-written out_dir behind: a reader sees either
    the old complete cache, the new complete one, or (between the two renames) none at all.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex}")
    staging.mkdir()  # not tempfile.mkdtemp: that makes it 0700, which would hide the cache from others
    try:
        for key in FILES:
            with _synced_file(staging / f"{key}.npy") as f:
                np.save(f, getattr(mnist, key))
        record = {
            **provenance,
            "counts": {key: len(getattr(mnist, key)) for key in FILES},
            "fingerprints": {key: fingerprint(getattr(mnist, key)) for key in FILES},
        }
        with _synced_file(staging / "source.json") as f:
            f.write((json.dumps(record, indent=2, default=str) + "\n").encode())
        if out_dir.exists():
            # rename() cannot replace a non-empty folder: move the old one aside first.
            retired = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex}")
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no-op once it has become out_dir


@contextlib.contextmanager
def _synced_file(path: Path):
    """A file opened for writing and flushed to disk on exit, so the rename publishing it cannot
    outrun its bytes after a power loss."""
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _recorded_fingerprints(out_dir: Path) -> dict:
    """The fingerprints `prepare` recorded in out_dir/source.json; for a cache prepared before they
    were recorded, those of canonical MNIST when its inputs were the canonical files."""
    path, redo = out_dir / "source.json", f"delete {out_dir.absolute()} and run again (prepare_data rebuilds it)"
    try:
        record = json.loads(path.read_text())
        if "fingerprints" in record:
            return record["fingerprints"]
        inputs = set(record["sha256"].values())
    except FileNotFoundError:
        raise _error(path, f"missing; {redo}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _error(path, f"unreadable ({exc}); {redo}") from None
    canonical = {*SHA256.values(), *SHA256_IDX.values()}
    if record.get("source") != "npz" and len(inputs) == len(FILES) and inputs <= canonical:
        return dict(SHA256_IDX)
    raise _error(path, f"records no checksums of the prepared arrays; {redo}")


def open_prepared(out_dir) -> MNIST:
    """The prepared cache, memory-mapped read-only (cheap for many parallel training jobs), validated,
    each array checked against the fingerprint recorded when it was prepared (a damaged or edited
    cache would otherwise be trained on under the data key of the data it was made from)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise _error(out_dir, "prepared MNIST folder not found; run the prepare_data rule first")
    expected = _recorded_fingerprints(out_dir)
    paths = {key: out_dir / f"{key}.npy" for key in FILES}
    arrays = {}
    for key, path in paths.items():
        try:
            arrays[key] = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise _error(path, "prepared array missing; run the prepare_data rule again") from None
        except (OSError, ValueError) as exc:
            raise _error(path, f"unreadable .npy file ({exc}); run the prepare_data rule again") from None
        if fingerprint(arrays[key]) != expected.get(key):
            raise _error(
                path,
                f"does not match the checksum recorded when it was prepared (damaged or changed); delete "
                f"{out_dir.absolute()} and run again (prepare_data rebuilds it)",
            )
    mnist = MNIST(**arrays)
    validate(mnist, {key: str(path.absolute()) for key, path in paths.items()})
    return mnist


# --- split ---------------------------------------------------------------------------------------
def split(mnist: MNIST, validation_size: int, train_subset: int | None = None) -> Split:
    """The fixed split: the first train_subset (None: all) training images, of which the last
    validation_size are the validation set and the rest the training set; the test set is whole.

    Bad sizes are configuration mistakes, not data problems, so they raise ValueError naming the
    config key.
    """
    available = len(mnist.x_train)
    taken = available if train_subset is None else train_subset
    if not 1 <= taken <= available:
        raise ValueError(
            f"data.train_subset = {train_subset} must be between 1 and the {available} training images available"
        )
    if not 1 <= validation_size < taken:
        raise ValueError(
            f"data.validation_size = {validation_size} must be at least 1 and smaller than the {taken} "
            f"training images taken (data.train_subset), so that some remain for training"
        )
    fit = taken - validation_size
    return Split(
        x_train=_features(mnist.x_train[:fit]),
        y_train=_labels(mnist.y_train[:fit]),
        x_val=_features(mnist.x_train[fit:taken]),
        y_val=_labels(mnist.y_train[fit:taken]),
        x_test=_features(mnist.x_test),
        y_test=_labels(mnist.y_test),
    )


def _features(images: np.ndarray) -> np.ndarray:
    features = images.reshape(len(images), -1).astype(np.float32)
    features /= 255.0
    return features


def _labels(labels: np.ndarray) -> np.ndarray:
    return labels.astype(np.int32)
