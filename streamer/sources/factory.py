"""``--source SRC`` → a FrameSource: webcam<N>, a video file, a directory/glob of images, a URL, or demo."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamer.errors import SourceError
from streamer.sources.base import FrameSource
from streamer.sources.demo import DEMO_NAME, DemoSource
from streamer.sources.images import IMAGE_EXTENSIONS, ImageFilesSource
from streamer.sources.video import CameraSource, StreamSource, VideoFileSource

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})
_CAMERA = re.compile(r"(?:webcam|/dev/video)(\d+)", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_KEYS = re.compile(r"pass|pwd|token|key|auth|secret|sig|cred", re.IGNORECASE)
SOURCE_KINDS_HINT = ("a source is webcam<N>, a video file, a directory or glob of images, "
                     "an rtsp:// or http(s):// URL, or demo")


def slug(text: str, default: str = "source") -> str:
    """A topic-safe source id: letters, digits, '_' and '-' only (topics are ``pred.<id>``)."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:64].strip("-") or default


def redact_url(url: str) -> str:
    """``rtsp://user:pw@host/p?token=x`` → ``rtsp://***@host/p?token=***``: safe for logs and messages."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if _SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", url)


def url_name(url: str) -> str:
    """Source id for a URL, host and path only: ``rtsp://u:p@cam1:554/live`` → cam1-live."""
    parts = urlsplit(url)
    host = parts.hostname or "stream"
    return slug(f"{host}-{parts.path}", "stream")


def is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def make_source(spec: str, realtime: bool = False) -> FrameSource:
    """The source for one ``--source`` value, not yet opened. Raises SourceError for what cannot be one."""
    spec = spec.strip()
    if not spec:
        raise SourceError("empty --source", SOURCE_KINDS_HINT)
    if spec.lower() == DEMO_NAME:
        return DemoSource(realtime=realtime)
    if m := _CAMERA.fullmatch(spec):
        index = int(m.group(1))
        return CameraSource(index, f"webcam{index}")
    if m := _SCHEME.match(spec):
        scheme = m.group(1).lower()
        redacted = redact_url(spec)
        if scheme == "file":
            return make_source(urlsplit(spec).path, realtime)
        if scheme not in STREAM_SCHEMES:
            raise SourceError(f"unsupported URL scheme {scheme!r} in --source {redacted}",
                              f"use one of: {', '.join(sorted(STREAM_SCHEMES))}")
        return StreamSource(spec, url_name(spec), redacted)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFilesSource(str(path), slug(path.resolve().name), realtime=realtime)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageFilesSource(str(path), slug(path.stem), realtime=realtime)
        return VideoFileSource(path, slug(path.stem), realtime=realtime)
    if is_glob(spec):
        parent = next((p for p in path.parents if not is_glob(str(p))), Path("."))
        return ImageFilesSource(spec, slug(parent.resolve().name, "images"), realtime=realtime)
    raise SourceError(f"no such file or directory: {spec}", f"check the path; {SOURCE_KINDS_HINT}")


def open_source(spec: str, realtime: bool = False) -> FrameSource:
    """Make and open the source for ``spec`` (SourceError, one line, when it cannot be opened)."""
    source = make_source(spec, realtime)
    source.open()
    return source


def unique_names(sources: Iterable[FrameSource]) -> None:
    """Rename sources in place so that ids are unique: clip, clip-2, clip-3 ..."""
    seen: set[str] = set()
    for source in sources:
        name, n = source.name, 1
        while name in seen:
            n += 1
            name = f"{source.name}-{n}"
        source.name = name
        seen.add(name)
