"""OpenCV threading while a pipeline runs: decoder threads shared out, OpenCV's pool at 1, all restored."""

from __future__ import annotations

import os

import cv2
import pytest

from streamer.preprocess import DECODE_THREADS_ENV, POOL_THREADS_ENV, NativeThreads, decode_threads


def test_decoder_threads_share_the_cores() -> None:
    assert decode_threads(1, 16) is None  # one source keeps FFmpeg's default
    assert decode_threads(8, 16) == 2
    assert decode_threads(16, 16) == 1
    assert decode_threads(4, 2) == 1


def test_apply_and_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DECODE_THREADS_ENV, raising=False)
    monkeypatch.delenv(POOL_THREADS_ENV, raising=False)
    before = cv2.getNumThreads()
    native = NativeThreads(8, cores=16).apply()
    try:
        assert cv2.getNumThreads() == 1
        assert native.decoder_threads == 2
        assert os.environ[DECODE_THREADS_ENV] == "2"
    finally:
        native.restore()
    assert cv2.getNumThreads() == before
    assert DECODE_THREADS_ENV not in os.environ


def test_the_users_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DECODE_THREADS_ENV, "5")
    monkeypatch.setenv(POOL_THREADS_ENV, "3")
    before = cv2.getNumThreads()
    native = NativeThreads(8, cores=16).apply()
    native.restore()
    assert native.decoder_threads is None and cv2.getNumThreads() == before
    assert os.environ[DECODE_THREADS_ENV] == "5"


def test_one_source_keeps_opencvs_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POOL_THREADS_ENV, raising=False)
    before = cv2.getNumThreads()
    native = NativeThreads(1, cores=16).apply()
    try:
        assert cv2.getNumThreads() == before
    finally:
        native.restore()
