"""The run's output files (``--output`` JSONL, ``--summary-json``, ``--annotate`` videos): checked before
anything is opened for writing, written so that a full disk never leaves a half-written file.

:func:`check_outputs` refuses (ConfigError: one line, exit 2), before the first frame, an output that

- is one of the run's inputs (``--source clip.mp4 --output clip.mp4``), through any link;
- already exists and is not what this tool writes there (a video, the model, a config file ...): a streamer
  JSONL (its first line a ``pred`` message), summary (a JSON object with the summary's keys) or annotated
  video (it ends with :data:`ANNOTATION_MARK`) is fine to replace, and so is an empty file or a device such
  as ``/dev/null``;
- is a directory, is in a directory that does not exist, or cannot be written;
- is given to two outputs at once.

:func:`write_file` writes a whole file (the summary) through a temporary file renamed over the target, so
the target is either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from streamer.errors import ConfigError, StreamerError
from streamer.files import write_atomic

JSONL = "jsonl"
SUMMARY = "summary"
ANNOTATION = "annotation"  # a video --annotate wrote (streamer.view.annotate)
# the last bytes of every video --annotate writes, inside a padding box of its container (players skip it)
ANNOTATION_MARK = b"\nwritten by streamer --annotate\n"
SUMMARY_KEYS = frozenset({"frames", "elapsed_s", "backend", "sources"})
_SNIFF_BYTES = 1 << 16  # enough for a first JSONL line
_SUMMARY_MAX_BYTES = 16 << 20  # a summary is kilobytes; a bigger file is not one
_REPLACE_HINT = "choose another path, or move that file away first"


def check_outputs(outputs: Mapping[str, tuple[str, str]], inputs: Iterable[Path]) -> None:
    """``outputs``: flag → (path, kind: JSONL, SUMMARY or ANNOTATION), "" = not written; ``inputs``: the
    run's input files. Raises ConfigError naming the flag, the path and the fix for the first one that is not
    safe."""
    inodes = {}
    for path in inputs:
        with contextlib.suppress(OSError):
            st = path.stat()
            inodes[(st.st_dev, st.st_ino)] = path
    taken: dict[tuple[int, int] | str, str] = {}
    for flag, (text, kind) in outputs.items():
        if not text:
            continue
        path = Path(text).expanduser()
        key = _identity(path)
        if key in taken:
            raise ConfigError(f"{flag} {text} is also given to {taken[key]}", "give each output its own file")
        taken[key] = flag
        _check_one(flag, text, path, kind, inodes)


def _identity(path: Path) -> tuple[int, int] | str:
    try:
        st = path.stat()
        return st.st_dev, st.st_ino
    except OSError:
        return str(path.resolve())


def _check_one(flag: str, text: str, path: Path, kind: str, inputs: dict[tuple[int, int], Path]) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ConfigError(f"cannot write {flag} {text!r}: {exc.strerror}", _REPLACE_HINT) from None
    if st is None:
        parent = path.parent
        if not parent.is_dir():
            raise ConfigError(f"cannot write {flag} {text!r}: directory {str(parent)!r} does not exist",
                              "create it, or choose a file in an existing, writable directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write {flag} {text!r}: directory {str(parent)!r} is not writable",
                              "choose a file in a writable directory")
        return
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{flag} {text!r} is a directory", "give a file name, e.g. DIR/out.jsonl")
    source = inputs.get((st.st_dev, st.st_ino))
    if source is not None:
        raise ConfigError(f"{flag} {text!r} is the input {str(source)!r}: writing it would destroy it",
                          _REPLACE_HINT)
    if not stat.S_ISREG(st.st_mode):
        return  # /dev/null, a FIFO: nothing there to lose
    if not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {flag} {text!r}: permission denied", _REPLACE_HINT)
    own = {JSONL: is_own_jsonl, SUMMARY: is_own_summary, ANNOTATION: is_own_annotation}[kind]
    if st.st_size and not own(path):
        what = {JSONL: "a streamer JSONL file", SUMMARY: "a streamer summary",
                ANNOTATION: "a video streamer annotated"}[kind]
        raise ConfigError(f"{flag} {text!r} exists and is not {what}: writing it would destroy it",
                          _REPLACE_HINT)


def is_own_jsonl(path: Path) -> bool:
    """The file's first line is a ``pred`` message (what ``--output`` writes), or it holds only blanks."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return False
    if not head.strip():
        return True
    first = head.split(b"\n", 1)[0]
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and row.get("type") == "pred" and isinstance(row.get("v"), int)


def is_own_annotation(path: Path) -> bool:
    """The file ends with :data:`ANNOTATION_MARK` (what ``--annotate`` writes)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < len(ANNOTATION_MARK):
                return False
            f.seek(size - len(ANNOTATION_MARK))
            return f.read() == ANNOTATION_MARK
    except OSError:
        return False


def is_own_summary(path: Path) -> bool:
    """The file is a JSON object with the keys of a run summary (what ``--summary-json`` writes)."""
    try:
        if path.stat().st_size > _SUMMARY_MAX_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.keys() >= SUMMARY_KEYS


def write_file(path: str | Path, data: bytes, flag: str) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file beside it, renamed over it); a
    device or FIFO is written directly. StreamerError (one line) when it cannot be written."""
    path = Path(path).expanduser()
    try:
        special = path.exists() and not path.is_file()
        if special:
            with open(path, "wb") as f:
                f.write(data)
            return
        write_atomic(path, data)
    except OSError as exc:
        raise StreamerError(f"cannot write {flag} {str(path)!r}: {exc.strerror or exc}",
                            "free disk space or choose another path; the run itself completed") from None
