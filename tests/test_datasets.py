"""Tests for fastbp.datasets: IDX parsing, file lookup, verified downloads."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from fastbp import datasets
from fastbp.datasets import mnist as mnist_mod
from fastbp.datasets import (DatasetNotFoundError, DownloadError, download_file, load_mnist, load_split,
                             parse_idx, read_idx)


from conftest import SHARED, needs_fashion, needs_mnist_test


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode an array as IDX (uint8 by default)."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real cache, environment folders or system folders; returns the cache dir."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTBP_CACHE_DIR", str(cache))
    monkeypatch.delenv("FASTBP_DATA_DIR", raising=False)
    monkeypatch.delenv("FASTBP_MIRROR", raising=False)
    monkeypatch.setattr(mnist_mod, "SYSTEM_DIRS", ())
    return cache


# --------------------------------------------------------------------------- IDX parsing


def test_parse_idx_roundtrip_and_dtypes():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(a)), a)
    f = np.linspace(-1, 1, 6).astype(np.float32).reshape(2, 3)
    out = parse_idx(idx_bytes(f, code=0x0D))
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, f)
    assert out.flags.writeable


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x00\x00", "shorter than the 4-byte magic"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic number"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic number"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x05", "truncated IDX header"),
        (idx_bytes(np.zeros((5, 2, 2), np.uint8))[:-1], "truncated"),
        (idx_bytes(np.zeros((5, 2, 2), np.uint8)) + b"\x00", "trailing bytes"),
        (idx_bytes(np.zeros(5, np.uint8)), "expected an IDX file with 3 dimension"),
    ],
)
def test_parse_idx_rejects_bad_data(data, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_idx(data, "some-file", ndim=3)
    assert "some-file" in str(info.value)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, array_shapes(min_dims=1, max_dims=3, max_side=6)), st.data())
def test_parse_idx_roundtrip_and_every_truncation_fails(a, data):
    raw = idx_bytes(a)
    np.testing.assert_array_equal(parse_idx(raw), a)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ValueError):
        parse_idx(raw[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=48))
def test_parse_idx_random_bytes_never_crash(raw):
    try:
        parse_idx(raw)
    except ValueError:
        pass


def test_read_idx_gzip_plain_truncated_and_corrupt(tmp_path):
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    raw = idx_bytes(a)
    (tmp_path / "plain").write_bytes(raw)
    (tmp_path / "good.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "good.gz"), a)

    gz = gzip.compress(raw)
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ValueError, match="cut.gz"):
        read_idx(tmp_path / "cut.gz")
    bad = bytearray(gz)
    bad[len(bad) // 2] ^= 0xFF
    bad[len(bad) // 2 + 1] ^= 0xFF
    (tmp_path / "corrupt.gz").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="corrupt.gz"):
        read_idx(tmp_path / "corrupt.gz")
    # A gzip stream that is fine but holds a short IDX body.
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(ValueError, match="short.gz.*truncated"):
        read_idx(tmp_path / "short.gz")


def test_read_idx_every_cut_and_every_changed_byte(tmp_path):
    """A gzip-compressed IDX file cut at any byte is an error naming it; with any one byte
    changed it reads the same array (an unused header field) or is an error naming it (the
    gzip CRC-32 and length, then the IDX checks): never a wrong array, never another
    exception."""
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    gz = gzip.compress(idx_bytes(a), mtime=0)
    path = tmp_path / "images-idx3-ubyte.gz"
    same = 0
    for i in range(len(gz)):
        path.write_bytes(gz[:i])
        with pytest.raises(ValueError, match="images-idx3-ubyte.gz"):
            read_idx(path, ndim=3)
        bad = bytearray(gz)
        bad[i] ^= 0xFF
        path.write_bytes(bytes(bad))
        try:
            got = read_idx(path, ndim=3)
        except ValueError as exc:
            assert "images-idx3-ubyte.gz" in str(exc)
        else:
            np.testing.assert_array_equal(got, a)
            same += 1
    assert 0 < same < 12  # the flags, mtime, extra-flags and OS header bytes


# --------------------------------------------------------------------------- real files


@needs_fashion
def test_fashion_mnist_real_files(isolated):
    (x, t), (xt, tt) = load_mnist(dataset="fashion-mnist", data_dir=SHARED, download=False)
    assert x.shape == (60000, 784) and x.dtype == np.float32
    assert xt.shape == (10000, 784) and tt.shape == (10000,)
    assert 0.0 <= x.min() and x.max() == 1.0
    assert t.dtype == np.int64 and set(np.unique(t)) == set(range(10))
    assert np.bincount(t).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    xr, tr = load_split("test", dataset="fashion-mnist", data_dir=SHARED, normalize=False, flatten=False,
                        one_hot_label=True)
    assert xr.dtype == np.uint8 and xr.shape == (10000, 1, 28, 28)
    assert tr.shape == (10000, 10) and tr.dtype == np.float32
    np.testing.assert_array_equal(tr.argmax(axis=1), tt)
    np.testing.assert_array_equal(xr.reshape(10000, 784) / np.float32(255), xt)


@needs_mnist_test
def test_mnist_test_split_and_missing_train_images(isolated, tmp_path):
    x, t = load_split("test", data_dir=SHARED, download=False)
    assert x.shape == (10000, 784)
    assert t[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first MNIST test labels
    # A folder with the test split only (built here, so the check does not depend on what
    # the shared folder holds): the training images are missing, a clear error, not a crash.
    only_test = tmp_path / "only-test" / "mnist"
    only_test.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (only_test / name).symlink_to(SHARED / "mnist" / name)
    np.testing.assert_array_equal(load_split("test", data_dir=only_test.parent,
                                             download=False)[1], t)
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte.gz not found(.|\n)*Put the four files"):
        load_mnist(data_dir=only_test.parent, download=False)


@needs_mnist_test
def test_data_dir_can_be_the_dataset_folder_itself_and_env_var(isolated, monkeypatch):
    x, _ = load_split("test", data_dir=SHARED / "mnist", download=False)
    assert x.shape == (10000, 784)
    monkeypatch.setenv("FASTBP_DATA_DIR", str(SHARED))
    x2, _ = load_split("test", download=False)
    np.testing.assert_array_equal(x, x2)


# --------------------------------------------------------------------------- lookup order and arguments


def _write_split(folder: Path, value: int, n: int = 10000, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = idx_bytes(np.full((n, 28, 28), value, np.uint8))
    lbl = idx_bytes(np.full(n, value % 10, np.uint8))
    for name, data in (("t10k-images-idx3-ubyte", img), ("t10k-labels-idx1-ubyte", lbl)):
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (folder / name).write_bytes(data)


def test_lookup_order_data_dir_env_cache(isolated, tmp_path, monkeypatch):
    _write_split(isolated / "mnist", 3)
    assert load_split("test", download=False, normalize=False)[1][0] == 3
    _write_split(tmp_path / "env" / "mnist", 2, gz=False)  # uncompressed files are accepted too
    monkeypatch.setenv("FASTBP_DATA_DIR", str(tmp_path / "env"))
    assert load_split("test", download=False, normalize=False)[1][0] == 2
    _write_split(tmp_path / "arg" / "mnist", 1)
    assert load_split("test", data_dir=tmp_path / "arg", download=False, normalize=False)[1][0] == 1
    dirs = datasets.search_dirs("mnist", tmp_path / "arg")
    assert dirs[:3] == [tmp_path / "arg" / "mnist", tmp_path / "env" / "mnist", isolated / "mnist"]


def test_system_folder_is_searched_after_the_cache(isolated, tmp_path, monkeypatch):
    # Stands in for /usr/share/datasets, where Debian's dataset-fashion-mnist installs.
    _write_split(tmp_path / "usr-share" / "fashion-mnist", 6)
    monkeypatch.setattr(mnist_mod, "SYSTEM_DIRS", (tmp_path / "usr-share",))
    assert load_split("test", dataset="fashion-mnist", download=False, normalize=False)[1][0] == 6
    _write_split(isolated / "fashion-mnist", 5)
    assert load_split("test", dataset="fashion-mnist", download=False, normalize=False)[1][0] == 5


def test_corrupt_local_file_is_an_error_not_a_fallback(isolated):
    _write_split(isolated / "mnist", 4)
    (isolated / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(9999, np.uint8))))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz holds 10000 images but .*t10k-labels"):
        load_split("test", download=False)


def test_bad_arguments(isolated):
    with pytest.raises(ValueError, match="unknown dataset 'kmnist'"):
        load_mnist(dataset="kmnist")
    with pytest.raises(TypeError, match="dataset must be a str"):
        load_mnist(dataset=3)
    with pytest.raises(ValueError, match="split must be one of"):
        load_split("validation")
    with pytest.raises(TypeError, match="normalize must be a bool"):
        load_mnist(normalize="yes")


def test_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTBP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.cache_dir() == tmp_path / "fastbp"
    monkeypatch.setenv("FASTBP_CACHE_DIR", str(tmp_path / "x"))
    assert datasets.cache_dir() == tmp_path / "x"


# --------------------------------------------------------------------------- downloads from a local server


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict  # path -> (status, body, send_only)
    timeout = 5  # seconds per socket operation: a stuck client cannot hold the server

    def do_GET(self):  # noqa: N802 - http.server API
        status, body, send_only = self.routes.get(self.path, (404, b"not found", None))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # send_only < len(body) simulates a connection dropped mid-transfer.
        self.wfile.write(body if send_only is None else body[:send_only])
        self.close_connection = True

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 that the test fills with routes; stops itself after 60 s at most."""
    routes: dict = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60.0, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _serve_test_split(routes, prefix="/mnist/"):
    """Serve a valid MNIST-shaped test split; return file name -> sha256 of the served bytes."""
    rng = np.random.default_rng(0)
    files = {
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8)), 1),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(rng.integers(0, 10, 10000, dtype=np.uint8)), 1),
    }
    for name, body in files.items():
        routes[prefix + name] = (200, body, None)
    return {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}


def _use_checksums(monkeypatch, digests, dataset="mnist"):
    spec = mnist_mod.DATASETS[dataset]
    checksums = dict(spec.checksums)
    checksums.update({name: ("sha256", d) for name, d in digests.items()})
    monkeypatch.setitem(mnist_mod.DATASETS, dataset, dataclasses.replace(spec, checksums=checksums))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_download_good_files_then_served_from_cache(isolated, server, monkeypatch):
    base, routes = server
    digests = _serve_test_split(routes)
    _use_checksums(monkeypatch, digests)
    monkeypatch.setenv("FASTBP_MIRROR", base + "/{dataset}/")
    x, t = load_split("test", progress=False)
    assert x.shape == (10000, 784) and t.shape == (10000,)
    assert _leftovers(isolated) == ["mnist", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    routes.clear()  # the second load must not touch the network
    x2, _ = load_split("test", progress=False)
    np.testing.assert_array_equal(x, x2)


def test_download_wrong_checksum_leaves_nothing(isolated, server, monkeypatch):
    base, routes = server
    digests = _serve_test_split(routes)
    digests["t10k-images-idx3-ubyte.gz"] = "0" * 64
    _use_checksums(monkeypatch, digests)
    monkeypatch.setenv("FASTBP_MIRROR", base + "/mnist")  # no trailing slash on purpose
    with pytest.raises(DatasetNotFoundError, match="SHA256 mismatch"):
        load_split("test", progress=False)
    assert _leftovers(isolated) == ["mnist"]


def test_download_truncated_body_leaves_nothing(isolated, server, monkeypatch):
    base, routes = server
    digests = _serve_test_split(routes)
    _use_checksums(monkeypatch, digests)
    status, body, _ = routes["/mnist/t10k-images-idx3-ubyte.gz"]
    routes["/mnist/t10k-images-idx3-ubyte.gz"] = (status, body, len(body) // 3)
    monkeypatch.setenv("FASTBP_MIRROR", base + "/mnist/")
    with pytest.raises(DatasetNotFoundError, match="truncated body|transfer failed"):
        load_split("test", progress=False)
    assert _leftovers(isolated) == ["mnist"]


def test_download_404_says_where_to_put_files(isolated, server, monkeypatch):
    base, _ = server
    monkeypatch.setenv("FASTBP_MIRROR", base + "/nothing-here/")
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("test", dataset="fashion-mnist", progress=False)
    msg = str(info.value)
    assert "HTTP 404" in msg and "Put the four files" in msg and str(isolated / "fashion-mnist") in msg
    assert _leftovers(isolated / "fashion-mnist") == []


def test_download_file_md5_and_progress(tmp_path, server):
    base, routes = server
    body = b"hello idx" * 1000
    routes["/f"] = (200, body, None)
    out = download_file(base + "/f", tmp_path / "sub" / "f", checksum=("md5", hashlib.md5(body).hexdigest()),
                        progress=True)
    assert out.read_bytes() == body
    with pytest.raises(DownloadError, match="MD5 mismatch"):
        download_file(base + "/f", tmp_path / "g", checksum=("md5", "0" * 32), progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["f", "sub"]


def test_unreachable_mirror_is_a_download_error(tmp_path):
    # Port 9 (discard) on localhost is closed in test environments: connection refused, fast.
    with pytest.raises(DownloadError, match="127.0.0.1"):
        download_file("http://127.0.0.1:9/x", tmp_path / "x", checksum=("sha256", "0" * 64), timeout=2)
    assert list(tmp_path.iterdir()) == []
