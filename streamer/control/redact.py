"""What the control plane shows of a source: its URI and free text with the credentials of URLs redacted."""

from __future__ import annotations

import re

from streamer.sources.factory import redact_url

_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def public_uri(spec: str) -> str:
    """A source's spec as responses and labels show it (credentials redacted)."""
    return redact_url(spec) if "://" in spec else spec


def public_text(text: str) -> str:
    """Free text (a source's state detail) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
