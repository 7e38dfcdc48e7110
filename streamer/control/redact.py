"""What the control plane shows of a source: its URI and free text with the credentials of URLs redacted."""

from __future__ import annotations

from streamer.sources.urls import public_text, redact_url

__all__ = ["public_text", "public_uri"]


def public_uri(spec: str) -> str:
    """A source's spec as responses and labels show it (credentials redacted)."""
    return redact_url(spec) if "://" in spec else spec
