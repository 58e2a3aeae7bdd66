"""Tests of elbox.data: fixed splits, file formats, checksums, downloads and user arrays."""

import gzip
import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from elbox.data import DATASETS, Dataset, binarize, default_data_dir, load_dataset, read_amat, read_idx
from elbox.data import named as data
from elbox.errors import ElboxError


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test touches the network: a fetch that a test did not stub fails loudly."""

    def refuse(url, dest):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(data, "_fetch", refuse)


# ------------------------------------------------------------------------- Dataset


def test_dataset_dim_and_repr_without_tensors():
    x = torch.zeros(4, 3)
    ds = Dataset("toy", x, x[:1], x[:1], image_shape=None, levels=None)
    assert ds.dim == 3
    assert ds.labels == {}
    assert "tensor" not in repr(ds)


def test_default_data_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ELBOX_DATA_DIR", str(tmp_path))
    assert default_data_dir("mnist") == tmp_path / "mnist"
    monkeypatch.delenv("ELBOX_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir("mnist") == tmp_path / "home" / ".cache" / "elbox" / "mnist"


# -------------------------------------------------------------------------- binarize


def test_binarize_draws_zero_one_with_the_input_mean():
    x = torch.full((200_000,), 0.3)
    b = binarize(x, torch.Generator().manual_seed(1))
    assert b.shape == x.shape and b.dtype == x.dtype
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    # Standard error of the mean is sqrt(0.21 / 2e5) ~ 0.001; 0.006 is six of them.
    assert abs(b.mean().item() - 0.3) < 0.006


def test_binarize_is_reproducible_with_a_generator():
    x = torch.rand(50, 10)
    first = binarize(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, binarize(x, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_binarize_refuses_values_outside_unit_interval(bad):
    with pytest.raises(ElboxError, match=r"\[0, 1\]"):
        binarize(torch.tensor([0.5, bad]))


# ---------------------------------------------------------------------- load_dataset


def test_unknown_name_lists_the_choices():
    with pytest.raises(ElboxError) as info:
        load_dataset("cifar")
    assert all(name in str(info.value) for name in DATASETS)
    assert ".npy" in str(info.value) and ".npz" in str(info.value)


# --------------------------------------------------------------------------- digits


def test_digits_fixed_split_shapes_and_levels():
    ds = load_dataset("digits")
    assert (ds.name, ds.image_shape, ds.levels, ds.dim) == ("digits", (8, 8), 16, 64)
    assert [tuple(x.shape) for x in (ds.train, ds.valid, ds.test)] == [
        (1437, 64),
        (180, 64),
        (180, 64),
    ]
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == torch.float32
        assert x.min() >= 0 and x.max() <= 1
        assert torch.equal(x * 16, (x * 16).round())  # on the grid k / 16
    assert {k: len(v) for k, v in ds.labels.items()} == {"train": 1437, "valid": 180, "test": 180}
    assert ds.labels["train"].dtype == torch.int64


def test_digits_split_ignores_the_training_seed():
    torch.manual_seed(1)
    np.random.seed(1)
    first = load_dataset("digits")
    torch.manual_seed(2)
    np.random.seed(2)
    second = load_dataset("digits")
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(first, split), getattr(second, split))
        assert torch.equal(first.labels[split], second.labels[split])


# ------------------------------------------------------------------ binarized MNIST


def test_binarized_mnist_from_shared_data(shared_data):
    folder = shared_data / "binarized_mnist"
    if not (folder / "binarized_mnist_train.mat").is_file():
        pytest.skip(f"{folder} has no binarized_mnist_*.mat files")
    ds = load_dataset("binarized-mnist", folder)
    assert [tuple(x.shape) for x in (ds.train, ds.valid, ds.test)] == [
        (50_000, 784),
        (10_000, 784),
        (10_000, 784),
    ]
    assert (ds.levels, ds.image_shape, ds.labels) == (1, (28, 28), {})
    assert set(ds.test.unique().tolist()) == {0.0, 1.0}
    # Mean pixel values stated in the data's README, to its four decimals.
    assert ds.train.mean().item() == pytest.approx(0.1306, abs=5e-5)
    assert ds.test.mean().item() == pytest.approx(0.1325, abs=5e-5)


def _write_amat(path: Path, x: np.ndarray) -> None:
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in x))


def test_read_amat_parses_rows_of_zero_one(tmp_path):
    x = np.random.default_rng(0).integers(0, 2, size=(5, 12)).astype(np.uint8)
    _write_amat(tmp_path / "tiny.amat", x)
    got = read_amat(tmp_path / "tiny.amat")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, x)


def test_read_amat_accepts_crlf_and_trailing_blank_lines(tmp_path):
    (tmp_path / "a.amat").write_bytes(b"0 1 1\r\n1 0 0 \r\n\r\n")
    np.testing.assert_array_equal(read_amat(tmp_path / "a.amat"), [[0, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(("text", "message"), [("0 1\n1 0 1\n", "widths"), ("0 1\n0 2\n", "other than 0 or 1")])
def test_read_amat_refuses_ragged_or_non_binary(tmp_path, text, message):
    (tmp_path / "bad.amat").write_text(text)
    with pytest.raises(ElboxError, match=message):
        read_amat(tmp_path / "bad.amat")


def test_binarized_mnist_checks_the_split_sizes(tmp_path, monkeypatch):
    # With no known checksum the count check is what stops a wrong file.
    monkeypatch.setitem(data._CHECKSUMS, "binarized-mnist", {})
    for split in ("train", "valid", "test"):
        _write_amat(tmp_path / f"binarized_mnist_{split}.amat", np.zeros((3, 784), np.uint8))
    with pytest.raises(ElboxError, match=r"shape \(3, 784\).*\(50000, 784\)"):
        load_dataset("binarized-mnist", tmp_path)


def test_binarized_mnist_corrupt_file_fails_its_checksum(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"binarized_mnist_{split}.mat").write_bytes(b"MATLAB 5.0 MAT-file, tampered")
    expected = data._CHECKSUMS["binarized-mnist"]["binarized_mnist_train.mat"][1]
    with pytest.raises(ElboxError, match="checksum") as info:
        load_dataset("binarized-mnist", tmp_path)
    assert "binarized_mnist_train.mat" in str(info.value) and expected in str(info.value)


def test_binarized_mnist_missing_folder_says_how_to_get_the_files(tmp_path):
    with pytest.raises(ElboxError) as info:
        load_dataset("binarized-mnist", tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "--download" in message
    assert "binarized_mnist_train.amat" in message and "binarized_mnist_test.amat" in message
    assert "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/" in message
    assert "\n" not in message


# --------------------------------------------------------------------- MNIST (IDX)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``array`` (1-D labels or 3-D images) in IDX format, gzipped if .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _write_mnist(folder: Path, n_train: int, n_test: int, suffix: str = "") -> None:
    """A tiny MNIST-format folder of 2x3 images whose labels are the row index mod 10."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 2, 3)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)


def _md5s(folder: Path) -> dict[str, tuple[str, str]]:
    return {p.name: ("md5", hashlib.md5(p.read_bytes()).hexdigest()) for p in folder.iterdir()}


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (4, 2, 3)).astype(np.uint8)
    _write_idx(tmp_path / f"images{suffix}", images)
    _write_idx(tmp_path / f"labels{suffix}", np.arange(4))
    np.testing.assert_array_equal(read_idx(tmp_path / f"images{suffix}", 2051), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"labels{suffix}", 2049), np.arange(4))


def test_read_idx_refuses_a_wrong_magic_number(tmp_path):
    _write_idx(tmp_path / "labels", np.arange(4))
    with pytest.raises(ElboxError, match="magic number 2049, expected 2051"):
        read_idx(tmp_path / "labels", 2051)


def test_read_idx_refuses_a_truncated_file(tmp_path):
    _write_idx(tmp_path / "images", np.zeros((4, 2, 3)))
    (tmp_path / "short").write_bytes((tmp_path / "images").read_bytes()[:-5])
    with pytest.raises(ElboxError, match="truncated"):
        read_idx(tmp_path / "short", 2051)


def test_read_idx_refuses_a_broken_gzip(tmp_path):
    _write_idx(tmp_path / "images.gz", np.zeros((4, 2, 3)))
    (tmp_path / "short.gz").write_bytes((tmp_path / "images.gz").read_bytes()[:-12])
    with pytest.raises(ElboxError, match="gzip"):
        read_idx(tmp_path / "short.gz", 2051)


def test_mnist_splits_last_ten_thousand_training_images_for_validation(tmp_path):
    _write_mnist(tmp_path, n_train=10_004, n_test=5)  # uncompressed: no published checksum
    ds = load_dataset("mnist", tmp_path)
    assert [len(x) for x in (ds.train, ds.valid, ds.test)] == [4, 10_000, 5]
    assert (ds.dim, ds.image_shape, ds.levels) == (6, (2, 3), 255)
    assert torch.equal(ds.train * 255, (ds.train * 255).round())
    assert ds.labels["valid"][:3].tolist() == [4, 5, 6]  # row 4 onwards, in file order
    raw = read_idx(tmp_path / "t10k-images-idx3-ubyte", 2051)
    np.testing.assert_allclose(ds.test.numpy(), raw.reshape(5, 6) / 255, rtol=1e-6)


def test_mnist_gz_files_are_checked_against_the_published_md5(tmp_path):
    _write_mnist(tmp_path, n_train=10_001, n_test=2, suffix=".gz")
    with pytest.raises(ElboxError, match="checksum: md5"):
        load_dataset("fashion-mnist", tmp_path)


def test_mnist_gz_files_load_when_their_checksums_match(tmp_path, monkeypatch):
    _write_mnist(tmp_path, n_train=10_001, n_test=2, suffix=".gz")
    monkeypatch.setitem(data._CHECKSUMS, "fashion-mnist", _md5s(tmp_path))
    ds = load_dataset("fashion-mnist", tmp_path)
    assert (ds.name, len(ds.train), len(ds.test)) == ("fashion-mnist", 1, 2)


def test_mnist_refuses_images_and_labels_of_different_lengths(tmp_path):
    _write_mnist(tmp_path, n_train=10_001, n_test=3)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(2))
    with pytest.raises(ElboxError, match=r"3 images but .* 2 labels"):
        load_dataset("mnist", tmp_path)


def test_mnist_missing_files_mention_download_and_the_mirror(tmp_path):
    with pytest.raises(ElboxError, match="--download") as info:
        load_dataset("mnist", tmp_path)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
    assert data._MIRRORS["mnist"][0] in str(info.value)


# ------------------------------------------------------------------------- download


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Tiny Fashion-MNIST .gz files served by a stub fetch; returns the URLs asked for."""
    source = tmp_path / "mirror"
    _write_mnist(source, n_train=10_002, n_test=3, suffix=".gz")
    monkeypatch.setitem(data._CHECKSUMS, "fashion-mnist", _md5s(source))
    asked = []

    def fetch(url, dest):
        asked.append(url)
        dest.write_bytes((source / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(data, "_fetch", fetch)
    return asked


def test_download_fetches_verifies_and_loads(tmp_path, mirror):
    target = tmp_path / "data" / "fashion"
    ds = load_dataset("fashion-mnist", target, download=True)
    assert len(ds.train) == 2 and len(mirror) == 4
    assert sorted(p.name for p in target.iterdir()) == sorted(data._CHECKSUMS["fashion-mnist"])
    load_dataset("fashion-mnist", target, download=True)
    assert len(mirror) == 4  # present files are not fetched again


def test_download_falls_back_to_the_next_mirror(tmp_path, mirror, monkeypatch):
    serve = data._fetch

    def first_mirror_down(url, dest):
        if url.startswith(data._MIRRORS["fashion-mnist"][0]):
            raise OSError("connection refused")
        serve(url, dest)

    monkeypatch.setattr(data, "_fetch", first_mirror_down)
    assert len(load_dataset("fashion-mnist", tmp_path / "d", download=True).test) == 3


def test_failed_download_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken(url, dest):
        dest.write_bytes(b"half a fi")
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_fetch", broken)
    with pytest.raises(ElboxError, match=r"Could not download.*offline.*by hand"):
        load_dataset("mnist", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_download_with_a_wrong_checksum_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_fetch", lambda url, dest: dest.write_bytes(b"not the data"))
    with pytest.raises(ElboxError, match="checksum"):
        load_dataset("binarized-mnist", tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- user arrays


def test_npy_2d_is_split_80_10_10_by_a_fixed_permutation(tmp_path):
    x = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert [len(s) for s in (ds.train, ds.valid, ds.test)] == [32, 4, 4]
    assert (ds.dim, ds.image_shape, ds.levels, ds.labels) == (3, None, None, {})
    assert ds.train.dtype == torch.float32 and ds.name == str(tmp_path / "x.npy")
    rows = torch.cat([ds.train, ds.valid, ds.test])[:, 0].sort().values
    assert torch.equal(rows, torch.arange(0, 120, 3, dtype=torch.float32))  # a partition
    assert torch.equal(load_dataset(ds.name).valid, ds.valid)  # fixed


def test_npy_3d_images_are_flattened(tmp_path):
    np.save(tmp_path / "img.npy", np.random.default_rng(0).integers(0, 2, (10, 4, 5)))
    ds = load_dataset(str(tmp_path / "img.npy"))
    assert (ds.dim, ds.image_shape, ds.levels) == (20, (4, 5), 1)
    assert [len(s) for s in (ds.train, ds.valid, ds.test)] == [8, 1, 1]


@pytest.mark.parametrize("shape", [(12,), (3, 2, 2, 2)])
def test_npy_of_other_ranks_is_refused_with_its_shape(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape))
    with pytest.raises(ElboxError, match=re.escape(f"shape {shape}") + r".*\[N, D\].*\[N, H, W\]"):
        load_dataset(str(tmp_path / "x.npy"))


def test_npy_with_nan_is_refused_with_count_and_first_index(tmp_path):
    x = np.zeros((10, 3))
    x[4, 1] = x[7, 0] = np.nan
    x[8, 2] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ElboxError, match=r"3 non-finite values.*index \(4, 1\)"):
        load_dataset(str(tmp_path / "x.npy"))


_unpickled = []


def _record_unpickling():
    _unpickled.append(True)
    return "loaded"


class _Tripwire:
    """Unpickling this calls _record_unpickling, so a load that unpickles is seen."""

    def __reduce__(self):
        return (_record_unpickling, ())


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[_Tripwire()]] * 4, dtype=object), allow_pickle=True)
    np.savez(tmp_path / "obj.npz", train=np.array([[_Tripwire()]] * 4, dtype=object))
    for name in ("obj.npy", "obj.npz"):
        with pytest.raises(ElboxError, match="unpickle"):
            load_dataset(str(tmp_path / name))
    assert _unpickled == []


def test_string_arrays_are_refused(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"]] * 5))
    with pytest.raises(ElboxError, match="dtype <U1"):
        load_dataset(str(tmp_path / "s.npy"))


def test_empty_and_too_small_arrays_are_refused(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    np.save(tmp_path / "two.npy", np.zeros((2, 3)))
    with pytest.raises(ElboxError, match="empty"):
        load_dataset(str(tmp_path / "empty.npy"))
    with pytest.raises(ElboxError, match=r"2 rows.*at least 3"):
        load_dataset(str(tmp_path / "two.npy"))


def test_npz_with_all_splits_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    splits = {"train": rng.random((6, 4)), "valid": rng.random((2, 4)), "test": rng.random((3, 4))}
    np.savez(tmp_path / "d.npz", **splits, train_labels=np.arange(6), test_labels=np.arange(3))
    ds = load_dataset(str(tmp_path / "d.npz"))
    for split, x in splits.items():
        np.testing.assert_allclose(getattr(ds, split).numpy(), x, rtol=1e-6)
    assert sorted(ds.labels) == ["test", "train"] and ds.labels["train"].dtype == torch.int64


def test_npz_missing_splits_are_cut_from_train_with_their_labels(tmp_path):
    x = np.arange(20, dtype=np.float32).reshape(20, 1)
    np.savez(tmp_path / "d.npz", train=x, train_labels=np.arange(20), valid=x[:3] + 100)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert [len(s) for s in (ds.train, ds.valid, ds.test)] == [18, 3, 2]
    assert ds.valid[:, 0].tolist() == [100.0, 101.0, 102.0]
    for split in ("train", "test"):  # labels follow their rows
        assert getattr(ds, split)[:, 0].long().tolist() == ds.labels[split].tolist()


def test_npz_with_different_feature_counts_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.zeros((5, 4)), valid=np.zeros((2, 3)))
    with pytest.raises(ElboxError, match=r"different numbers of features.*\(5, 4\).*\(2, 3\)"):
        load_dataset(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("keys", [{"arr_0"}, {"train", "vaild"}, {"train", "valid_labels"}])
def test_npz_with_unexpected_keys_is_refused(tmp_path, keys):
    np.savez(tmp_path / "d.npz", **{k: np.zeros(5 if "labels" in k else (5, 2)) for k in keys})
    with pytest.raises(ElboxError, match="needs 'train'"):
        load_dataset(str(tmp_path / "d.npz"))


def test_npz_labels_of_the_wrong_length_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.zeros((5, 2)), train_labels=np.arange(4))
    with pytest.raises(ElboxError, match=r"shape \(5,\)"):
        load_dataset(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("name", ["x.npy", "x.npz"])
def test_corrupt_array_files_are_refused(tmp_path, name):
    np.savez(tmp_path / "good.npz", train=np.zeros((5, 2)))
    np.save(tmp_path / "good.npy", np.zeros((5, 2)))
    good = (tmp_path / f"good{Path(name).suffix}").read_bytes()
    (tmp_path / name).write_bytes(good[: len(good) // 2])
    with pytest.raises(ElboxError, match="Could not read"):
        load_dataset(str(tmp_path / name))


def test_garbage_npy_is_refused(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"this is not numpy")
    with pytest.raises(ElboxError, match="Could not read"):
        load_dataset(str(tmp_path / "x.npy"))


def test_missing_array_file_is_named(tmp_path):
    with pytest.raises(ElboxError, match="does not exist") as info:
        load_dataset(str(tmp_path / "nope.npz"))
    assert "nope.npz" in str(info.value)


# ---------------------------------------------------------------- messages that name the user's file (issue 18)


def _prepare(**options):
    from elbox.training import TrainConfig
    from elbox.training.setup import prepare

    return prepare(TrainConfig.from_dict({"epochs": 1, "latent_dim": 2, "hidden": [8]} | options))


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli"])
def test_a_support_refusal_names_the_row_of_the_file_not_of_the_shuffled_split(tmp_path, likelihood):
    x = np.zeros((100, 6), dtype=np.float32)
    x[36, 2] = 0.5 if likelihood == "bernoulli" else 1.5
    np.save(tmp_path / "grey.npy", x)
    with pytest.raises(ElboxError, match=r"grey\.npy data .*at row 36, column 2"):
        _prepare(data=str(tmp_path / "grey.npy"), likelihood=likelihood)


def test_negative_values_are_called_negative_not_grey(tmp_path):
    np.save(tmp_path / "neg.npy", -np.ones((50, 4), np.float32))
    with pytest.raises(ElboxError, match="negative values") as e:
        _prepare(data=str(tmp_path / "neg.npy"), likelihood="bernoulli")
    assert "grey" not in str(e.value)


def test_float64_beyond_float32_says_so_without_numpys_warning(tmp_path):
    np.save(tmp_path / "big.npy", np.full((50, 4), 1e300))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's "overflow encountered in cast" must not escape
        with pytest.raises(ElboxError, match="float32's range") as e:
            load_dataset(str(tmp_path / "big.npy"))
    assert "impute" not in str(e.value) and "NaN" not in str(e.value)


def test_static_binarize_of_standardised_data_names_the_file_and_its_range(tmp_path):
    np.save(tmp_path / "std.npy", np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32))
    with pytest.raises(ElboxError, match=r"std\.npy range from -") as e:
        _prepare(data=str(tmp_path / "std.npy"), binarize="static")
    assert "the tensor" not in str(e.value) and "255" not in str(e.value)


def test_a_folder_named_like_a_data_file_is_called_a_folder(tmp_path):
    (tmp_path / "x.npy").mkdir()
    with pytest.raises(ElboxError, match="is a folder, not a file"):
        load_dataset(str(tmp_path / "x.npy"))


def test_the_rows_of_a_split_file_point_back_into_it(tmp_path):
    x = np.arange(300, dtype=np.float32).reshape(100, 3)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(ds, split), torch.from_numpy(x[ds.rows[split].numpy()]))
