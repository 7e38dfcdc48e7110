"""FFmpeg's own error messages (from the libavutil OpenCV decodes with) routed into the product's logging.

Left alone, OpenCV's FFmpeg backend prints decoder complaints (``[h264 @ 0x…] Invalid NAL unit size …``)
straight to stderr, hundreds of them for one damaged clip. :func:`install` puts a log callback in FFmpeg's
place that counts every error per source and logs it on the ``streamer.ffmpeg`` logger at DEBUG (URL
credentials redacted): ``--log-level debug`` shows each one, and a source's end says how many there were
(:func:`count_for`). Everything below FFmpeg's error level is dropped, as OpenCV itself does.

A message is attributed to the source whose thread emitted it (:func:`claim`: a reader thread, or the
thread opening a source); messages from a decoder's own worker threads go to the only source that has a
thread claimed, else they are counted as unattributed (``""``).

It needs OpenCV's libavutil loaded (``import cv2`` first) and ``OPENCV_FFMPEG_LOGLEVEL`` unset: with that
variable set, OpenCV installs its own printing callback on every open. Where the library cannot be found
(another platform, an OpenCV without FFmpeg), ``install`` returns False and the caller keeps FFmpeg quiet.

The callback runs in FFmpeg's threads and takes the GIL; OpenCV's Python calls all release the GIL, so the
one way to deadlock would be a capture destroyed by the garbage collector while its decoder threads still
log: sources therefore always ``release()`` their captures explicitly.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from streamer.sources.urls import public_log_text

log = logging.getLogger("streamer.ffmpeg")

AV_LOG_ERROR = 16  # FFmpeg's level for errors; higher numbers are warnings, info and chatter
_LINE = 1024
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_lock = threading.Lock()
_threads: dict[int, str] = {}  # thread ident -> source name
_counts: collections.Counter[str] = collections.Counter()  # source name ("" = unattributed) -> errors
_state: dict[str, object] = {}  # "lib", "callback" once installed


def _find_libavutil() -> Path | None:
    """The libavutil that OpenCV's FFmpeg backend uses: mapped into this process once cv2 is imported (the
    one beside OpenCV's own libraries when several are), or shipped beside cv2 (macOS wheels)."""
    try:
        import cv2
    except ImportError:
        return None
    cv2_dir = Path(cv2.__file__).resolve().parent
    mapped: list[Path] = []
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/maps").read_text().splitlines():
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and "libavutil" in parts[5].rsplit("/", 1)[-1]:
                    mapped.append(Path(parts[5].strip()))
    mapped = list(dict.fromkeys(mapped))
    for path in mapped:
        if path.parent.parent == cv2_dir.parent or cv2_dir in path.parents:
            return path
    if len(mapped) == 1:
        return mapped[0]
    for folder in (cv2_dir / ".dylibs", *cv2_dir.parent.glob("opencv*.libs")):
        for candidate in sorted(folder.glob("libavutil*")):
            return candidate
    return None


def install() -> bool:
    """Route FFmpeg's errors into logging (idempotent). False when OpenCV's libavutil cannot be found."""
    with _lock:
        if "lib" in _state:
            return True
        path = _find_libavutil()
        if path is None:
            return False
        try:
            lib = ctypes.CDLL(str(path))
            lib.av_log_set_callback.argtypes = [_CALLBACK]
            lib.av_log_set_callback.restype = None
            lib.av_log_format_line2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                                                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                                ctypes.POINTER(ctypes.c_int)]
            lib.av_log_format_line2.restype = ctypes.c_int
        except (OSError, AttributeError):
            return False
        callback = _CALLBACK(_on_log)
        _state.update(lib=lib, callback=callback)  # the callback object must outlive its use by FFmpeg
        lib.av_log_set_callback(callback)
    log.debug("FFmpeg's messages go to this log (%s)", path.name)
    return True


def installed() -> bool:
    return "lib" in _state


def uninstall() -> None:
    """FFmpeg logs nothing from now on (before the interpreter exits: a late message from a capture thread
    must not call into a Python that is shutting down)."""
    with _lock:
        lib = _state.pop("lib", None)
        if lib is not None:
            lib.av_log_set_callback(_CALLBACK())  # type: ignore[attr-defined]  # NULL: no callback


def _on_log(ptr: int | None, level: int, fmt: bytes | None, args: int | None) -> None:
    if level > AV_LOG_ERROR or fmt is None:
        return
    try:
        lib = _state["lib"]
        line = ctypes.create_string_buffer(_LINE)
        prefix = ctypes.c_int(1)
        lib.av_log_format_line2(ptr, level, fmt, args, line, _LINE, ctypes.byref(prefix))  # type: ignore[attr-defined]
        text = line.value.decode("utf-8", "replace").strip()
        if not text:
            return
        with _lock:
            source = _threads.get(threading.get_ident())
            if source is None:
                claimed = set(_threads.values())
                source = claimed.pop() if len(claimed) == 1 else ""
            _counts[source] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ffmpeg%s: %s", f" ({source})" if source else "", public_log_text(text))
    except Exception:  # never raise into FFmpeg
        pass


def claim(source: str) -> None:
    """Attribute FFmpeg's messages from the calling thread to ``source`` from now on."""
    with _lock:
        _threads[threading.get_ident()] = source


def unclaim() -> None:
    with _lock:
        _threads.pop(threading.get_ident(), None)


@contextlib.contextmanager
def claimed(source: str) -> Iterator[None]:
    """Messages of the calling thread belong to ``source`` inside the block (e.g. while it opens)."""
    ident = threading.get_ident()
    with _lock:
        before = _threads.get(ident)
        _threads[ident] = source
    try:
        yield
    finally:
        with _lock:
            if before is None:
                _threads.pop(ident, None)
            else:
                _threads[ident] = before


def count_for(source: str) -> int:
    """FFmpeg errors attributed to ``source`` so far (``""``: unattributed)."""
    with _lock:
        return _counts[source]


def counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)
