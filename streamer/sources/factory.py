"""``--source SRC`` → a FrameSource: webcam<N>, a video file, a directory/glob of images, a URL, or demo."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Container, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from streamer.devices import DECODE_CHOICES
from streamer.errors import SourceError
from streamer.sources.base import FrameSource, Policy
from streamer.sources.demo import DEMO_NAME, DemoSource, demo_clip
from streamer.sources.images import IMAGE_EXTENSIONS, ImageFilesSource
from streamer.sources.live import CameraSource, LiveOptions, StreamSource
from streamer.sources.nvdec import (
    NvdecStreamSource,
    NvdecUnsupported,
    nvdec_reason,
    require_nvdec,
)
from streamer.sources.nvdec_file import NvdecDemoSource, NvdecFileSource
from streamer.sources.urls import redact_url
from streamer.sources.video import VideoFileSource, describe_mode

log = logging.getLogger(__name__)

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})
NEEDS_HOST = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https"})
_CAMERA = re.compile(r"(?:webcam|/dev/video)(\d+)", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_OPTION = re.compile(r"(.*)#([A-Za-z_]+)=([^#]*)", re.DOTALL)  # a trailing #key=value of a --source
SOURCE_OPTIONS = ("policy", "decode")
SOURCE_KINDS_HINT = ("a source is webcam<N>, a video file, a directory or glob of images, "
                     "an rtsp:// or http(s):// URL, or demo")


def slug(text: str, default: str = "source") -> str:
    """A topic-safe source id: letters, digits, '_' and '-' only (topics are ``pred.<id>``)."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:64].strip("-") or default


def url_name(url: str) -> str:
    """Source id for a URL, host and path only: ``rtsp://u:p@cam1:554/live`` → cam1-live."""
    parts = urlsplit(redact_url(url))
    host = parts.hostname or "stream"
    return slug(f"{host}-{parts.path}", "stream")


def is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``SRC#policy=NAME#decode=MODE`` (any order, each at most once) → (SRC, {"policy": NAME, ...}).

    Only trailing ``#key=value`` parts count, and only the keys of :data:`SOURCE_OPTIONS` (anything else of
    that shape is a SourceError, so a typo is not silently taken as part of a path or URL)."""
    rest, options = spec.strip(), {}
    while (m := _OPTION.fullmatch(rest)) is not None:
        key, value = m.group(2).lower(), m.group(3).strip()
        if key not in SOURCE_OPTIONS:
            raise SourceError(f"--source ...#{m.group(2)}={value}: unknown source option {m.group(2)!r}",
                              "a source takes #policy=latest|block|drop-oldest and #decode=auto|cpu|nvdec")
        if key in options:
            raise SourceError(f"--source ...#{key}=: given twice", "give each source option once")
        options[key] = value
        rest = m.group(1).strip()
    return rest, options


def split_policy(spec: str) -> tuple[str, Policy | None]:
    """``SRC#policy=NAME`` → (SRC, Policy); a spec without the suffix → (spec, None). Other options
    (``#decode=``) are parsed, checked and left out of SRC."""
    rest, options = split_options(spec)
    policy = options.get("policy")
    return rest, None if policy is None else Policy.parse(policy, f"--source ...#policy={policy}")


def parse_decode(text: str, what: str = "--decode") -> str:
    mode = text.strip().lower()
    if mode not in DECODE_CHOICES:
        raise SourceError(f"{what}: unknown decoder {text!r}", f"choose one of {', '.join(DECODE_CHOICES)}")
    return mode


def make_source(spec: str, realtime: bool = False, *, live: LiveOptions | None = None,
                policy: Policy | None = None, decode: str = "auto") -> FrameSource:
    """The source for one ``--source`` value, not yet opened. Raises SourceError for what cannot be one.

    ``policy`` (``--policy``) replaces every source's default backpressure policy; a ``SRC#policy=NAME``
    suffix wins over both. ``decode`` (``--decode``): where video is decoded — ``auto`` (NVDEC when
    PyNvVideoCodec, a GPU and a stream it supports are there, else the CPU, saying why), ``cpu`` or
    ``nvdec``; a ``SRC#decode=MODE`` suffix wins. ``live``: timeouts and reconnects of cameras and streams."""
    spec, options = split_options(spec)
    own = options.get("policy")
    own_decode = options.get("decode")
    mode = parse_decode(own_decode, f"--source ...#decode={own_decode}") if own_decode is not None \
        else parse_decode(decode)
    source = _make(spec, realtime, live, mode)
    source.policy_override = Policy.parse(own, f"--source ...#policy={own}") if own is not None else policy
    return source


def _use_nvdec(mode: str, what: str) -> bool:
    """Whether to try NVDEC for ``what`` (a description for the log): ``nvdec`` without NVDEC here is a
    one-line error naming the extra; ``auto`` then logs why it decodes on the CPU."""
    if mode == "cpu":
        return False
    if mode == "nvdec":
        require_nvdec(f"--decode nvdec for {what}")
        return True
    reason = nvdec_reason()
    if reason is not None:
        log.info("%s: decoding on the CPU (--decode auto: %s)", what, reason)
        return False
    return True


def _not_for_nvdec(mode: str, what: str) -> None:
    """Cameras and images never go through NVDEC: said when NVDEC was asked for."""
    if mode == "nvdec":
        log.warning("%s: decoded on the CPU (NVDEC takes video files and network streams)", what)


def _nvdec_or_cpu(nvdec: NvdecFileSource, cpu: Callable[[], FrameSource], mode: str, what: str
                  ) -> FrameSource:
    """``nvdec`` when NVDEC can decode the file, else the CPU source (logged: a warning when NVDEC was asked
    for, info under ``auto``)."""
    try:
        nvdec.prepare()
    except NvdecUnsupported as exc:
        nvdec.close()
        (log.warning if mode == "nvdec" else log.info)("%s: decoding on the CPU (%s)", what, exc)
        return cpu()
    log.info("%s: decoding with NVDEC (%s %dx%d)", what, nvdec.codec, *nvdec.size)
    return nvdec


def _make(spec: str, realtime: bool, live: LiveOptions | None, decode: str = "auto") -> FrameSource:
    if not spec:
        raise SourceError("empty --source", SOURCE_KINDS_HINT)
    if spec.lower() == DEMO_NAME:
        if _use_nvdec(decode, "source demo"):
            video, truth = demo_clip()
            return _nvdec_or_cpu(NvdecDemoSource(video, truth, DEMO_NAME, realtime=realtime),
                                 lambda: DemoSource(realtime=realtime), decode, "source demo")
        return DemoSource(realtime=realtime)
    if m := _CAMERA.fullmatch(spec):
        index = int(m.group(1))
        _not_for_nvdec(decode, f"camera webcam{index}")
        return CameraSource(index, f"webcam{index}", live)
    if m := _SCHEME.match(spec):
        scheme = m.group(1).lower()
        redacted = redact_url(spec)
        if scheme == "file":
            return _make(urlsplit(spec).path, realtime, live, decode)
        if scheme not in STREAM_SCHEMES:
            raise SourceError(f"unsupported URL scheme {scheme!r} in --source {redacted}",
                              f"use one of: {', '.join(sorted(STREAM_SCHEMES))}")
        check_url(spec, redacted)
        if _use_nvdec(decode, f"stream {redacted}"):
            return NvdecStreamSource(spec, url_name(spec), redacted, live)
        return StreamSource(spec, url_name(spec), redacted, live)
    path = Path(spec).expanduser()
    if path.is_dir():
        _not_for_nvdec(decode, f"images {spec}")
        return ImageFilesSource(str(path), slug(path.resolve().name), realtime=realtime)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            _not_for_nvdec(decode, f"image {spec}")
            return ImageFilesSource(str(path), slug(path.stem), realtime=realtime)
        if _use_nvdec(decode, f"file {spec}"):
            return _nvdec_or_cpu(NvdecFileSource(path, slug(path.stem), realtime=realtime),
                                 lambda: VideoFileSource(path, slug(path.stem), realtime=realtime), decode,
                                 f"file {spec}")
        return VideoFileSource(path, slug(path.stem), realtime=realtime)
    if path.exists():  # a device, a named pipe, a socket: nothing OpenCV can read as a file
        raise SourceError(f"--source {spec} is {describe_mode(path.stat().st_mode)}, not a video file, "
                          "an image or a folder", SOURCE_KINDS_HINT)
    if is_glob(spec):
        _not_for_nvdec(decode, f"images {spec}")
        parent = next((p for p in path.parents if not is_glob(str(p))), Path("."))
        return ImageFilesSource(spec, slug(parent.resolve().name, "images"), realtime=realtime)
    raise SourceError(f"no such file or directory: {spec}", f"check the path; {SOURCE_KINDS_HINT}")


def check_url(url: str, redacted: str) -> None:
    """SourceError (one line, credentials redacted) for a URL that cannot be parsed: ``http://[::1``,
    a port that is not a number or out of range, no host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise SourceError(f"malformed URL in --source {redacted}: {exc}",
                          "write it as scheme://[user:password@]host[:port]/path") from None
    if not parts.hostname and parts.scheme.lower() in NEEDS_HOST:  # udp://@:1234 listens: no host
        raise SourceError(f"malformed URL in --source {redacted}: no host",
                          "write it as scheme://[user:password@]host[:port]/path")


def open_source(spec: str, realtime: bool = False, *, live: LiveOptions | None = None) -> FrameSource:
    """Make and open the source for ``spec`` (SourceError, one line, when it cannot be opened)."""
    source = make_source(spec, realtime, live=live)
    source.open()
    return source


def unique_name(base: str, taken: Container[str]) -> str:
    """``base``, or ``base-2``, ``base-3`` ... : the first not in ``taken``."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def unique_names(sources: Iterable[FrameSource]) -> None:
    """Rename sources in place so that ids are unique: clip, clip-2, clip-3 ..."""
    seen: set[str] = set()
    for source in sources:
        source.name = unique_name(source.name, seen)
        seen.add(source.name)
