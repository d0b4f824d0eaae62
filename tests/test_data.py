"""Tests of gradatlas.data on small synthetic IDX/npz files (no network), plus one on the real MNIST."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import idx_bytes
from gradatlas import data
from gradatlas.data import FILES, DataError

REAL_MNIST = Path(os.environ.get("GRADATLAS_MNIST", data.BUNDLED))  # the shipped copy unless told otherwise


# --- helpers -------------------------------------------------------------------------------------
def synthetic(n_train: int = 12, n_test: int = 5, seed: int = 0) -> data.MNIST:
    """A tiny random MNIST; labels cycle through 0..9 so every digit occurs."""
    rng = np.random.default_rng(seed)
    return data.MNIST(
        x_train=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        y_train=(np.arange(n_train) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        y_test=((np.arange(n_test) + 3) % 10).astype(np.uint8),
    )


def write_file(path: Path, payload: bytes) -> Path:
    """Write payload to path, gzip-compressed when the name ends with .gz (fastest level: a whole
    MNIST's images take 15 s at gzip's default level 9, under 1 s at level 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, compresslevel=1) if path.suffix == ".gz" else payload)
    return path


def write_folder(folder: Path, mnist: data.MNIST, gz: bool = True, dotted: bool = False) -> dict[str, Path]:
    """The four IDX files of mnist in folder, under the canonical (or old dotted) names."""
    paths = {}
    for key, name in FILES.items():
        if dotted:
            name = name.replace("-idx", ".idx")
        paths[key] = write_file(folder / (name + ".gz" if gz else name), idx_bytes(getattr(mnist, key)))
    return paths


def assert_same(a: data.MNIST, b: data.MNIST) -> None:
    for key in FILES:
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert getattr(b, key).dtype == np.uint8


# --- IDX -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("dotted", [False, True], ids=["canonical", "dotted"])
def test_read_idx_folder_round_trip(tmp_path, gz, dotted):
    mnist = synthetic()
    write_folder(tmp_path, mnist, gz=gz, dotted=dotted)
    assert_same(mnist, data.read_idx_folder(tmp_path))


def test_read_idx_sniffs_gzip_without_suffix(tmp_path):
    labels = np.arange(7, dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(data.read_idx(path), labels)


@pytest.mark.parametrize("suffix", [".gz", ""], ids=["gz", "raw"])
@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\x00\x01\x02", "3 bytes of trailing data"),
        (lambda b: b"\x12\x34" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "data type 0x0d"),
        (lambda b: b[:3] + b"\x02" + b[4:], "2 dimensions"),
        (lambda b: b[:10], "truncated inside its header"),
    ],
    ids=["truncated", "trailing", "magic", "dtype", "ndim", "header"],
)
def test_read_idx_rejects_malformed(tmp_path, suffix, corrupt, message):
    path = write_file(tmp_path / f"train-images-idx3-ubyte{suffix}", corrupt(idx_bytes(synthetic().x_train)))
    with pytest.raises(DataError, match=message) as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[:30] + bytes(x ^ 0xFF for x in b[30:60]) + b[60:],
        lambda b: b[: len(b) // 2],
        lambda b: b"\x1f\x8b" + b"\xff" * 40,
    ],
    ids=["flipped", "cut", "garbage"],
)
def test_read_idx_rejects_corrupt_gzip(tmp_path, corrupt):
    path = write_file(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(synthetic().x_test))
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match="corrupt gzip file") as error:
        data.read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as error:
        data.read_idx(tmp_path / "nothing-idx1-ubyte")
    assert "nothing-idx1-ubyte" in str(error.value)


def test_labels_out_of_range(tmp_path):
    mnist = synthetic()
    bad = mnist.y_train.copy()
    bad[4] = 12
    write_folder(tmp_path, data.MNIST(mnist.x_train, bad, mnist.x_test, mnist.y_test))
    with pytest.raises(DataError, match="label 12 at position 4") as error:
        data.read_idx_folder(tmp_path)
    assert str(tmp_path / "train-labels-idx1-ubyte.gz") in str(error.value)


def test_images_labels_count_mismatch(tmp_path):
    mnist = synthetic()
    write_folder(tmp_path, data.MNIST(mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test[:-1]))
    with pytest.raises(DataError, match="holds 4 labels") as error:
        data.read_idx_folder(tmp_path)
    assert str(tmp_path / "t10k-labels-idx1-ubyte.gz") in str(error.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in str(error.value)


def test_images_and_labels_files_swapped(tmp_path):
    paths = write_folder(tmp_path, synthetic())
    paths["x_test"].write_bytes(paths["y_test"].read_bytes())
    with pytest.raises(DataError, match="expected N x 28 x 28") as error:
        data.read_idx_folder(tmp_path)
    assert str(paths["x_test"]) in str(error.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="MNIST folder not found") as error:
        data.read_idx_folder(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(error.value)


def test_missing_one_file(tmp_path):
    write_folder(tmp_path, synthetic())["y_test"].unlink()
    with pytest.raises(DataError, match="not found") as error:
        data.read_idx_folder(tmp_path)
    assert "t10k-labels-idx1-ubyte" in str(error.value)


def test_validate_with_one_origin_names_the_array():
    mnist = synthetic()
    bad = data.MNIST(mnist.x_train.astype(np.int64), mnist.y_train, mnist.x_test, mnist.y_test)
    with pytest.raises(DataError, match=r"somewhere\.npz \[x_train\]: images have dtype int64"):
        data.validate(bad, "somewhere.npz")


# --- npz -----------------------------------------------------------------------------------------
def save_npz(path: Path, mnist: data.MNIST, skip: str | None = None) -> Path:
    np.savez(path, **{key: getattr(mnist, key) for key in FILES if key != skip})
    return path


def test_npz_round_trip(tmp_path):
    mnist = synthetic()
    assert_same(mnist, data.read_npz(save_npz(tmp_path / "mnist.npz", mnist)))


def test_npz_missing_key(tmp_path):
    path = save_npz(tmp_path / "mnist.npz", synthetic(), skip="y_test")
    with pytest.raises(DataError, match="lacks y_test") as error:
        data.read_npz(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "content",
    [b"this is not an archive", None],
    ids=["text", "npy"],
)
def test_npz_not_a_zip(tmp_path, content):
    path = tmp_path / "mnist.npz"
    if content is None:  # a single .npy array under an .npz name
        with open(path, "wb") as f:
            np.save(f, np.zeros(3, np.uint8))
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match="not a zip file") as error:
        data.read_npz(path)
    assert str(path) in str(error.value)


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file") as error:
        data.read_npz(tmp_path / "mnist.npz")
    assert "mnist.npz" in str(error.value)


# --- download ------------------------------------------------------------------------------------
@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server for a folder of synthetic .gz files, whose hashes replace SHA256."""
    served = tmp_path / "served"
    mnist = synthetic()
    paths = write_folder(served, mnist)
    monkeypatch.setattr(data, "SHA256", {key: data.sha256_of(path) for key, path in paths.items()})
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # urllib honours http_proxy; this server is local
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format, *args):  # record instead of printing to stderr
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}/", mnist=mnist, requests=requests)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_fetches_once(tmp_path, server):
    cache = tmp_path / "cache"
    assert data.download(server.url, cache) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{name}.gz" for name in FILES.values())
    assert len(server.requests) == 4
    assert_same(server.mnist, data.read_idx_folder(cache))

    data.download(server.url, cache)
    assert len(server.requests) == 4  # everything present with the right sha256: nothing fetched


def test_download_checksum_mismatch_leaves_nothing(tmp_path, server, monkeypatch):
    monkeypatch.setitem(data.SHA256, "y_train", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="expected " + "0" * 64) as error:
        data.download(server.url, cache)
    target = cache / "train-labels-idx1-ubyte.gz"
    assert str(target) in str(error.value)
    assert data.sha256_of(tmp_path / "served" / target.name) in str(error.value)
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz"]  # fetched before it


def test_download_missing_on_server(tmp_path, server):
    (tmp_path / "served" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="could not download") as error:
        data.download(server.url, tmp_path / "cache")
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)
    assert not any(p.name.startswith(".") for p in (tmp_path / "cache").iterdir())


def test_load_and_describe_each_source(tmp_path, server):
    mnist = server.mnist
    idx_folder, npz = tmp_path / "idx", save_npz(tmp_path / "mnist.npz", mnist)
    write_folder(idx_folder, mnist, gz=False)
    cache = tmp_path / "cache"
    assert_same(mnist, data.load("idx", idx_folder))
    assert_same(mnist, data.load("npz", npz))
    assert_same(mnist, data.load("download", "unused", url=server.url, cache=cache))

    downloaded = data.describe_source("download", "unused", url=server.url, cache=cache)
    assert downloaded["url"] == server.url and downloaded["path"] == str(cache)
    assert downloaded["sha256"] == {f"{FILES[key]}.gz": sha for key, sha in data.SHA256.items()}
    assert data.describe_source("npz", npz)["sha256"] == {"mnist.npz": data.sha256_of(npz)}
    assert set(data.describe_source("idx", idx_folder)["sha256"]) == set(FILES.values())

    with pytest.raises(ValueError, match="data.source = 'ftp'"):
        data.load("ftp", idx_folder)


# --- prepared cache ------------------------------------------------------------------------------
def test_prepare_round_trip_and_replace(tmp_path):
    out = tmp_path / "resources" / "mnist"
    data.prepare(synthetic(seed=1), out, {"source": "first"})
    new = synthetic(n_train=20, seed=2)
    data.prepare(new, out, {"source": "idx", "path": tmp_path})

    prepared = data.open_prepared(out)
    assert_same(new, prepared)
    assert isinstance(prepared.x_train, np.memmap) and not prepared.x_train.flags.writeable
    record = json.loads((out / "source.json").read_text())
    assert record["source"] == "idx" and record["path"] == str(tmp_path)
    assert record["counts"] == {"x_train": 20, "y_train": 20, "x_test": 5, "y_test": 5}
    assert os.listdir(out.parent) == ["mnist"]  # no staging or retired folder left


def test_prepare_crash_keeps_old_cache(tmp_path, monkeypatch):
    out = tmp_path / "mnist"
    old = synthetic(seed=1)
    data.prepare(old, out, {"source": "old"})

    real_save, saved = np.save, []

    def crashing_save(file, array, *args, **kwargs):
        if len(saved) == 2:
            raise OSError("disk full (simulated)")
        saved.append(array)
        real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        data.prepare(synthetic(seed=2), out, {"source": "new"})
    monkeypatch.undo()

    assert len(saved) == 2  # the crash came mid-way
    assert os.listdir(tmp_path) == ["mnist"]
    assert_same(old, data.open_prepared(out))
    assert json.loads((out / "source.json").read_text())["source"] == "old"


def test_open_prepared_missing(tmp_path):
    with pytest.raises(DataError, match="prepared MNIST folder not found") as error:
        data.open_prepared(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(error.value)

    data.prepare(synthetic(), tmp_path / "mnist", {})
    (tmp_path / "mnist" / "y_test.npy").unlink()
    with pytest.raises(DataError, match="prepared array missing") as error:
        data.open_prepared(tmp_path / "mnist")
    assert str(tmp_path / "mnist" / "y_test.npy") in str(error.value)


def test_open_prepared_checks_the_recorded_fingerprints(tmp_path):
    out = tmp_path / "mnist"
    data.prepare(synthetic(), out, {"source": "idx", "sha256": {}})
    labels = np.load(out / "y_train.npy")
    labels[0] = (labels[0] + 1) % 10  # a valid label, the wrong one
    np.save(out / "y_train.npy", labels)
    with pytest.raises(DataError, match="y_train.npy: does not match the checksum recorded") as error:
        data.open_prepared(out)
    assert f"delete {out}" in str(error.value)

    # a cache prepared before fingerprints were recorded: canonical inputs are checked against
    # canonical MNIST; other data cannot be checked and must be prepared again
    record = json.loads((out / "source.json").read_text())
    del record["fingerprints"]
    record["sha256"] = {FILES[key] + ".gz": sha for key, sha in data.SHA256.items()}
    (out / "source.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="x_train.npy: does not match"):
        data.open_prepared(out)
    record["sha256"] = {"mine.npz": "0" * 64}
    (out / "source.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="source.json: records no checksums"):
        data.open_prepared(out)


# --- split ---------------------------------------------------------------------------------------
def test_split_sizes_and_values():
    mnist = synthetic(n_train=12, n_test=5)
    parts = data.split(mnist, validation_size=3, train_subset=10)
    assert parts.x_train.shape == (7, 784) and parts.x_val.shape == (3, 784) and parts.x_test.shape == (5, 784)
    assert parts.x_train.dtype == np.float32 and parts.y_train.dtype == np.int32
    np.testing.assert_allclose(parts.x_val[0], mnist.x_train[7].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(parts.y_val, mnist.y_train[7:10])
    np.testing.assert_array_equal(parts.y_test, mnist.y_test)
    assert 0.0 <= parts.x_train.min() and parts.x_train.max() <= 1.0

    whole = data.split(mnist, validation_size=2)
    assert len(whole.x_train) == 10 and len(whole.x_val) == 2


@pytest.mark.parametrize(
    "validation_size, train_subset, key",
    [
        (12, None, "data.validation_size"),
        (5, 5, "data.validation_size"),
        (0, None, "data.validation_size"),
        (2, 13, "data.train_subset"),
        (2, 0, "data.train_subset"),
    ],
)
def test_split_rejects_bad_sizes(validation_size, train_subset, key):
    with pytest.raises(ValueError, match=key) as error:
        data.split(synthetic(n_train=12), validation_size, train_subset)
    assert not isinstance(error.value, DataError)  # a config mistake, not a data problem


# --- the real data -------------------------------------------------------------------------------
@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"real MNIST not found at {REAL_MNIST} (set GRADATLAS_MNIST)")
def test_real_mnist():
    for key, name in FILES.items():
        assert data.sha256_of(REAL_MNIST / f"{name}.gz") == data.SHA256[key], name
    mnist = data.read_idx_folder(REAL_MNIST)
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert len(mnist.y_train) == 60000 and len(mnist.y_test) == 10000
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


# --- the copy shipped with the project, swapped files, unreadable files ----------------------------
def copy_bundled(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        (folder / f"{name}.gz").write_bytes((data.BUNDLED / f"{name}.gz").read_bytes())
    return folder


def test_shipped_mnist_is_canonical_and_loads_without_network():
    for key, name in FILES.items():
        assert data.sha256_of(data.BUNDLED / f"{name}.gz") == data.SHA256[key], name
    mnist = data.load("bundled", None)
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert {key: data.fingerprint(getattr(mnist, key)) for key in FILES} == data.SHA256_IDX
    record = data.describe_source("bundled", None)
    assert record["path"] == str(data.BUNDLED) and set(record["sha256"].values()) == set(data.SHA256.values())


def test_bundled_copy_with_a_changed_file_is_refused(tmp_path):
    folder = copy_bundled(tmp_path / "mnist")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())))  # same payload, other bytes
    with pytest.raises(DataError, match="expected " + data.SHA256["y_test"]) as error:
        data.read_bundled(folder)
    assert str(labels) in str(error.value) and "git checkout -- resources/mnist" in str(error.value)


def test_bundled_copy_with_swapped_files_names_both(tmp_path):
    folder = copy_bundled(tmp_path / "mnist")
    train, test = folder / "train-labels-idx1-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    a, b = train.read_bytes(), test.read_bytes()
    train.write_bytes(b), test.write_bytes(a)
    with pytest.raises(DataError, match="swapped") as error:
        data.read_bundled(folder)
    assert str(train) in str(error.value) and str(test) in str(error.value)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_canonical_train_and_test_files_swapped_in_an_idx_folder(tmp_path, gz):
    """The four files are each valid; images and labels match in count; only their roles are wrong."""
    mnist = data.load("bundled", None)
    swapped = data.MNIST(mnist.x_test, mnist.y_test, mnist.x_train, mnist.y_train)
    paths = write_folder(tmp_path, swapped, gz=gz)
    with pytest.raises(DataError, match="look swapped") as error:
        data.load("idx", tmp_path)
    assert str(paths["x_train"]) in str(error.value) and str(paths["x_test"]) in str(error.value)
    with pytest.raises(DataError, match="look swapped"):  # no override for canonical files in the wrong role
        data.load("idx", tmp_path, allow_unusual_split=True)


def test_canonical_arrays_swapped_in_an_npz(tmp_path):
    mnist = data.load("bundled", None)
    path = save_npz(tmp_path / "swapped.npz", data.MNIST(mnist.x_test, mnist.y_test, mnist.x_train, mnist.y_train))
    with pytest.raises(DataError, match="look swapped") as error:
        data.load("npz", path)
    assert "[x_train]" in str(error.value) and "[x_test]" in str(error.value)


def test_unknown_data_needs_a_larger_training_split_or_the_override(tmp_path):
    write_folder(tmp_path, synthetic(n_train=5, n_test=12))
    with pytest.raises(DataError, match="data.allow_unusual_split") as error:
        data.load("idx", tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(error.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in str(error.value)
    assert len(data.load("idx", tmp_path, allow_unusual_split=True).x_train) == 5
    write_folder(tmp_path, synthetic(n_train=12, n_test=5))
    assert len(data.load("idx", tmp_path).x_train) == 12


def test_download_failure_says_what_to_do(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="could not download") as error:
        data.download(f"http://127.0.0.1:{port}/", tmp_path / "cache")
    message = str(error.value)
    assert "data.source: bundled" in message and "make demo MNIST=/path/to/mnist" in message
    assert "data.source: idx" in message and "train-images-idx3-ubyte.gz" in message
    with pytest.raises(DataError, match="could not download.*make demo MNIST="):  # data.url not a URL at all
        data.download("not/a/url/", tmp_path / "cache")


def test_unreadable_files_are_named(tmp_path):
    folder = copy_bundled(tmp_path / "idx")
    target = folder / "train-labels-idx1-ubyte.gz"
    target.unlink()
    target.symlink_to(target)  # a link to itself: cannot be opened, even by root
    with pytest.raises(DataError) as error:
        data.read_idx_folder(folder)
    assert str(target) in str(error.value) and "cannot be read" in str(error.value)
    with pytest.raises(DataError) as error:
        data.read_bundled(folder)
    assert str(target) in str(error.value)

    dangling = tmp_path / "broken"
    copy_bundled(dangling)
    (dangling / "t10k-images-idx3-ubyte.gz").unlink()
    (dangling / "t10k-images-idx3-ubyte.gz").symlink_to(tmp_path / "nowhere.gz")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot be read"):
        data.load("idx", dangling)

    as_folder = tmp_path / "mnist.npz"
    as_folder.mkdir()
    with pytest.raises(DataError, match="mnist.npz: is not a regular file"):
        data.read_npz(as_folder)
    loop = tmp_path / "loop.npz"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="loop.npz: cannot be read"):
        data.read_npz(loop)
    with pytest.raises(DataError, match="loop.npz: cannot be read"):
        data.sha256_of(loop)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission_is_named(tmp_path):
    folder = copy_bundled(tmp_path / "idx")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0)
    with pytest.raises(DataError, match="cannot be read") as error:
        data.load("idx", folder)
    assert str(target) in str(error.value)


def test_content_digest_follows_the_bytes(tmp_path):
    canonical = data.content_digest("bundled", None)
    assert data.content_digest("download", "anything") == canonical
    assert data.content_digest("idx", copy_bundled(tmp_path / "a")) == canonical
    npz = save_npz(tmp_path / "m.npz", synthetic())
    assert data.content_digest("npz", npz) != canonical
    with pytest.raises(DataError, match="MNIST folder not found"):
        data.content_digest("idx", tmp_path / "absent")
