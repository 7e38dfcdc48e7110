"""``--source SRC`` → a FrameSource: webcam<N>, a video file, a directory/glob of images, a URL, or demo."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamer.errors import SourceError
from streamer.sources.base import FrameSource, Policy
from streamer.sources.demo import DEMO_NAME, DemoSource
from streamer.sources.images import IMAGE_EXTENSIONS, ImageFilesSource
from streamer.sources.live import CameraSource, LiveOptions, StreamSource
from streamer.sources.video import VideoFileSource

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})
_CAMERA = re.compile(r"(?:webcam|/dev/video)(\d+)", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_KEYS = re.compile(r"pass|pwd|pw|token|key|auth|secret|sig|cred|session|user|login", re.IGNORECASE)
# key=value secrets some cameras take in the URL path (rtsp://cam/user=admin_password=x_channel=1)
_PATH_SECRET = re.compile(r"((?<![A-Za-z0-9])(?:user|login|pass|pwd|pw|token|secret|auth|key|sig|cred|"
                          r"session)\w*=)([^&;/?#_]*)", re.IGNORECASE)
_OPTION = re.compile(r"(.*)#policy=([^#]*)", re.DOTALL)
SOURCE_KINDS_HINT = ("a source is webcam<N>, a video file, a directory or glob of images, "
                     "an rtsp:// or http(s):// URL, or demo")


def slug(text: str, default: str = "source") -> str:
    """A topic-safe source id: letters, digits, '_' and '-' only (topics are ``pred.<id>``)."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:64].strip("-") or default


def redact_url(url: str) -> str:
    """``rtsp://user:pw@host/p?token=x`` → ``rtsp://***@host/p?token=***``: safe for logs and messages.

    User info, secret-looking query values and ``password=...`` style path segments are replaced by ***."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if _SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*")
        path = _PATH_SECRET.sub(r"\1***", parts.path)
        fragment = _PATH_SECRET.sub(r"\1***", parts.fragment)
        return urlunsplit((parts.scheme, netloc, path, query, fragment))
    except ValueError:
        return _PATH_SECRET.sub(r"\1***", re.sub(r"//[^/]*@", "//***@", url))


def url_name(url: str) -> str:
    """Source id for a URL, host and path only: ``rtsp://u:p@cam1:554/live`` → cam1-live."""
    parts = urlsplit(redact_url(url))
    host = parts.hostname or "stream"
    return slug(f"{host}-{parts.path}", "stream")


def is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def split_policy(spec: str) -> tuple[str, Policy | None]:
    """``SRC#policy=NAME`` → (SRC, Policy); a spec without the suffix → (spec, None)."""
    m = _OPTION.fullmatch(spec.strip())
    if m is None:
        return spec.strip(), None
    return m.group(1).strip(), Policy.parse(m.group(2), f"--source ...#policy={m.group(2)}")


def make_source(spec: str, realtime: bool = False, *, live: LiveOptions | None = None,
                policy: Policy | None = None) -> FrameSource:
    """The source for one ``--source`` value, not yet opened. Raises SourceError for what cannot be one.

    ``policy`` (``--policy``) replaces every source's default backpressure policy; a ``SRC#policy=NAME``
    suffix wins over both. ``live``: timeouts and reconnects of cameras and streams."""
    spec, own = split_policy(spec)
    source = _make(spec, realtime, live)
    source.policy_override = own or policy
    return source


def _make(spec: str, realtime: bool, live: LiveOptions | None) -> FrameSource:
    if not spec:
        raise SourceError("empty --source", SOURCE_KINDS_HINT)
    if spec.lower() == DEMO_NAME:
        return DemoSource(realtime=realtime)
    if m := _CAMERA.fullmatch(spec):
        index = int(m.group(1))
        return CameraSource(index, f"webcam{index}", live)
    if m := _SCHEME.match(spec):
        scheme = m.group(1).lower()
        redacted = redact_url(spec)
        if scheme == "file":
            return _make(urlsplit(spec).path, realtime, live)
        if scheme not in STREAM_SCHEMES:
            raise SourceError(f"unsupported URL scheme {scheme!r} in --source {redacted}",
                              f"use one of: {', '.join(sorted(STREAM_SCHEMES))}")
        return StreamSource(spec, url_name(spec), redacted, live)
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


def open_source(spec: str, realtime: bool = False, *, live: LiveOptions | None = None) -> FrameSource:
    """Make and open the source for ``spec`` (SourceError, one line, when it cannot be opened)."""
    source = make_source(spec, realtime, live=live)
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
