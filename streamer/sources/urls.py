"""Credentials redacted from URLs, alone or inside free text, for logs, messages and the control plane.

It imports nothing of streamer's, so that every module that shows a URL can use it (FFmpeg's log routing sits
below the source factory, which imports it through the video sources).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_KEYS = re.compile(r"pass|pwd|pw|token|key|auth|secret|sig|cred|session|user|login", re.IGNORECASE)
# key=value secrets some cameras take in the URL path (rtsp://cam/user=admin_password=x_channel=1)
_PATH_SECRET = re.compile(r"((?<![A-Za-z0-9])(?:user|login|pass|pwd|pw|token|secret|auth|key|sig|cred|"
                          r"session)\w*=)([^&;/?#_]*)", re.IGNORECASE)
# key=value secrets in free text (outside URLs): the value ends at a separator or white space
_TEXT_SECRET = re.compile(r"((?:pass|pwd|pw|token|key|auth|secret|sig|cred|session|user|login)\w*=)[^&;/\s]*",
                          re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


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


def public_text(text: str) -> str:
    """Free text (a source's state detail, an FFmpeg message) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def public_log_text(text: str) -> str:
    """``public_text``, and ``password=...`` style secrets outside any URL too (a library's log lines)."""
    return _TEXT_SECRET.sub(r"\1***", public_text(text))
