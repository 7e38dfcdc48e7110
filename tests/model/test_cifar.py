"""CIFAR-10 loader on a small directory in the official python-pickle format, written by the test."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from streamer.errors import DatasetError
from streamer.model import cifar

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_batch(path, images_rgb: np.ndarray, labels: list[int]) -> None:
    # the official layout: rows of 3072 bytes, 1024 red, then 1024 green, then 1024 blue, each row-major
    data = images_rgb.transpose(0, 3, 1, 2).reshape(len(images_rgb), -1)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, f)


@pytest.fixture()
def cifar_dir(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE):
        images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, 4)]
        write_batch(d / name, images, labels)
        batches[name] = (images, labels)
    with open(d / cifar.META_FILE, "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in NAMES], b"num_cases_per_batch": 4}, f)
    return tmp_path, batches


def test_loads_train_and_test_in_rgb_nhwc(cifar_dir):
    root, batches = cifar_dir
    x, y, labels = cifar.load_cifar10(root, "train")
    assert labels == tuple(NAMES)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    first, first_labels = batches["data_batch_1"]
    np.testing.assert_array_equal(x[:4], first)  # pixel (r, g, b) lands where it was written
    assert list(y[:4]) == first_labels
    tx, _, _ = cifar.load_cifar10(root / "cifar-10-batches-py", "test")  # the batches folder itself works too
    np.testing.assert_array_equal(tx, batches["test_batch"][0])


def test_missing_directory_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError) as info:
        cifar.load_cifar10(tmp_path / "nowhere", "train")
    text = str(info.value)
    assert "cifar-10-batches-py" in text and str(tmp_path / "nowhere") in text and "--data-dir" in text


def test_missing_batch_is_named(cifar_dir):
    root, _ = cifar_dir
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        cifar.load_cifar10(root, "train")


def test_corrupt_batch_and_bad_labels(cifar_dir):
    root, _ = cifar_dir
    d = root / "cifar-10-batches-py"
    (d / "test_batch").write_bytes(b"garbage, not a pickle")
    with pytest.raises(DatasetError, match="test_batch: not a CIFAR-10 python batch"):
        cifar.load_cifar10(root, "test")
    write_batch(d / "test_batch", np.zeros((2, 32, 32, 3), np.uint8), [3, 12])
    with pytest.raises(DatasetError, match="labels outside"):
        cifar.load_cifar10(root, "test")
    with pytest.raises(DatasetError, match="unknown CIFAR-10 split"):
        cifar.load_cifar10(root, "validation")
