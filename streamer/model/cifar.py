"""CIFAR-10 from the standard ``cifar-10-batches-py`` directory (the python pickles of the official archive).

Images come back as uint8 ``[N, 32, 32, 3]`` **RGB** with int64 labels, like :mod:`streamer.model.shapes`.
"""

from __future__ import annotations

import pickle
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from streamer.errors import DatasetError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DIRNAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def resolve_dir(data_dir: str | Path) -> Path:
    """``data_dir`` itself if it holds the batches, else ``data_dir/cifar-10-batches-py``."""
    d = Path(data_dir)
    return d if (d / META_FILE).is_file() else d / DIRNAME


def _missing_error(d: Path, why: str) -> DatasetError:
    return DatasetError(
        f"CIFAR-10 not found in {d} ({why})",
        f"put the extracted '{DIRNAME}' folder (data_batch_1..5, test_batch, batches.meta from {URL}) "
        f"at {d}, or pass --data-dir to where it is",
    )


def download(data_dir: str | Path, timeout: float = 30.0) -> Path:
    """Fetch and extract the official archive into ``data_dir``; DatasetError when offline."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(suffix=".tar.gz", dir=root) as tmp:
            with urllib.request.urlopen(URL, timeout=timeout) as resp:
                while block := resp.read(1 << 20):
                    tmp.write(block)
            tmp.flush()
            with tarfile.open(tmp.name, "r:gz") as tar:
                tar.extractall(root, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise _missing_error(root / DIRNAME, f"download failed: {exc}") from exc
    return root / DIRNAME


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})",
                           f"re-extract {URL}") from exc
    if len(images) != len(labels):
        raise DatasetError(f"{path}: {len(images)} images but {len(labels)} labels", f"re-extract {URL}")
    return np.ascontiguousarray(images), labels


def load_labels(d: Path) -> tuple[str, ...]:
    try:
        with open(d / META_FILE, "rb") as f:
            meta = pickle.load(f, encoding="bytes")
        return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in meta[b"label_names"])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError) as exc:
        raise DatasetError(f"{d / META_FILE}: unreadable CIFAR-10 label file ({exc})",
                           f"re-extract {URL}") from exc


def load_cifar10(data_dir: str | Path, split: str = "train", allow_download: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 RGB NHWC, labels int64, label names) of ``split`` ('train' or 'test')."""
    if split not in ("train", "test"):
        raise DatasetError(f"unknown CIFAR-10 split {split!r}", "use 'train' or 'test'")
    d = resolve_dir(data_dir)
    names = TRAIN_FILES if split == "train" else (TEST_FILE,)
    missing = [n for n in (*names, META_FILE) if not (d / n).is_file()]
    if missing:
        if not allow_download:
            raise _missing_error(d, "missing " + ", ".join(missing))
        d = download(Path(data_dir))
    parts = [_read_batch(d / n) for n in names]
    labels = load_labels(d)
    images = np.concatenate([p[0] for p in parts])
    targets = np.concatenate([p[1] for p in parts])
    if targets.size and (targets.min() < 0 or targets.max() >= len(labels)):
        raise DatasetError(f"{d}: labels outside 0..{len(labels) - 1}", f"re-extract {URL}")
    return images, targets, labels
