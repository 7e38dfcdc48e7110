"""``--decode auto|cpu|nvdec`` and ``#decode=``: which decoder a source gets, the fallbacks and the errors,
with real files. Every test asserts what this machine must do: on CI (no GPU, no PyNvVideoCodec) ``auto``
decodes on the CPU and says why, ``nvdec`` is a one-line error naming the extra; where NVDEC is available the
same tests assert that NVDEC takes the video and the CPU keeps what NVDEC cannot read."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from streamer_helpers import color_sequence, run_cli, write_video

from streamer.config import load_settings
from streamer.errors import BackendUnavailableError, ConfigError, SourceError
from streamer.sources.factory import make_source, split_options, split_policy
from streamer.sources.images import ImageFilesSource
from streamer.sources.live import StreamSource
from streamer.sources.nvdec import NVDEC_EXTRA, NvdecStreamSource, nvdec_reason
from streamer.sources.nvdec_file import NvdecFileSource
from streamer.sources.video import VideoFileSource

NVDEC = nvdec_reason() is None


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("nvdec") / "clip.avi", color_sequence(12), size=(64, 48))


def test_source_options_parse_in_any_order_and_reject_typos() -> None:
    assert split_options("a.mp4#policy=latest#decode=nvdec") == \
        ("a.mp4", {"policy": "latest", "decode": "nvdec"})
    assert split_options("rtsp://u:p@cam/live#decode=CPU#policy=block") == \
        ("rtsp://u:p@cam/live", {"decode": "CPU", "policy": "block"})
    assert split_options("http://cam/x?a=1#frag") == ("http://cam/x?a=1#frag", {})  # not an option's shape
    assert split_policy("clip.mp4#decode=cpu#policy=drop-oldest")[0] == "clip.mp4"
    with pytest.raises(SourceError, match=r"unknown source option 'decoder'.*#decode=auto\|cpu\|nvdec"):
        split_options("clip.mp4#decoder=nvdec")
    with pytest.raises(SourceError, match="given twice"):
        split_options("clip.mp4#decode=cpu#decode=nvdec")


def test_a_bad_decoder_name_is_a_one_line_error(clip: Path) -> None:
    with pytest.raises(SourceError, match=r"#decode=gpu: unknown decoder 'gpu'.*auto, cpu, nvdec"):
        make_source(f"{clip}#decode=gpu")
    with pytest.raises(ConfigError, match="--decode / \\[input\\] decode: invalid choice 'gpu'"):
        load_settings(None, {"decode": "gpu"})
    r = run_cli("--source", str(clip), "--decode", "gpu", "--bind", "none")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "invalid choice" in r.stderr


def test_cpu_decoding_is_what_cpu_asks_for(clip: Path) -> None:
    src = make_source(f"{clip}#decode=cpu")
    assert type(src) is VideoFileSource
    assert type(make_source("http://127.0.0.1:9/live.ts", decode="cpu")) is StreamSource


def test_auto_decodes_on_the_cpu_and_says_why_when_nvdec_cannot_run(clip: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streamer.sources.factory"):
        src = make_source(str(clip))  # --decode auto is the default
    if NVDEC:  # MJPEG: NVDEC takes it where the GPU decodes JPEG, else the CPU does; the log says which
        if type(src) is NvdecFileSource:
            assert "decoding with NVDEC" in caplog.text
            src.close()
        else:
            assert type(src) is VideoFileSource and "decoding on the CPU" in caplog.text
    else:
        assert type(src) is VideoFileSource
        assert f"decoding on the CPU (--decode auto: {nvdec_reason()})" in caplog.text
        assert "PyNvVideoCodec" in caplog.text or "GPU" in caplog.text or "driver" in caplog.text


def test_nvdec_without_pynvvideocodec_or_a_gpu_is_a_one_line_error_naming_the_extra(clip: Path) -> None:
    if NVDEC:
        src = make_source(f"{clip}#decode=nvdec")
        assert type(src) in (NvdecFileSource, VideoFileSource)
        src.close()
        return
    with pytest.raises(BackendUnavailableError) as err:
        make_source(f"{clip}#decode=nvdec")
    assert "NVDEC decoding is not available" in str(err.value) and "streamer[nvdec]" in str(err.value)
    r = run_cli("--source", str(clip), "--decode", "nvdec", "--bind", "none", "--backend", "onnxruntime")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("streamer: error: --decode nvdec for file") and NVDEC_EXTRA in lines[0]


def test_cameras_and_images_never_go_to_nvdec(tmp_path: Path, clip: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import cv2
    import numpy as np

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="streamer.sources.factory"):
        src = make_source(f"{folder}#decode=nvdec")
    assert type(src) is ImageFilesSource
    assert "decoded on the CPU (NVDEC takes video files and network streams)" in caplog.text


def test_a_url_goes_to_the_nvdec_stream_source_only_where_nvdec_runs() -> None:
    src = make_source("http://127.0.0.1:9/live.ts#policy=drop-oldest")
    assert (type(src) is NvdecStreamSource) if NVDEC else (type(src) is StreamSource)
    assert src.policy.value == "drop-oldest"


@pytest.mark.gpu
def test_nvdec_takes_a_file_it_can_decode(tmp_path: Path) -> None:
    if not NVDEC:
        pytest.skip(f"NVDEC is not available: {nvdec_reason()}")
    import cv2
    import numpy as np

    path = tmp_path / "mp4v.mp4"  # MPEG-4 part 2, which NVDEC decodes (the demo clip's codec)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (256, 256))
    for i in range(10):
        writer.write(np.full((256, 256, 3), i * 20, np.uint8))
    writer.release()
    src = make_source(str(path))
    assert type(src) is NvdecFileSource and src.decoder == "nvdec"
    src.close()


@pytest.mark.gpu
def test_a_codec_nvdec_lacks_falls_back_to_the_cpu_with_a_warning(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    if not NVDEC:
        pytest.skip(f"NVDEC is not available: {nvdec_reason()}")
    import cv2
    import numpy as np

    path = None
    for fourcc, ext in (("FFV1", "avi"), ("HFYU", "avi")):  # lossless codecs no NVDEC decodes
        candidate = tmp_path / f"lossless.{ext}"
        writer = cv2.VideoWriter(str(candidate), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48))
        if writer.isOpened():
            for i in range(5):
                writer.write(np.full((48, 64, 3), i * 40, np.uint8))
            writer.release()
            path = candidate
            break
    if path is None:
        pytest.skip("OpenCV here writes neither FFV1 nor HuffYUV")
    with caplog.at_level(logging.WARNING, logger="streamer.sources.factory"):
        src = make_source(f"{path}#decode=nvdec")
    assert type(src) is VideoFileSource
    assert "decoding on the CPU" in caplog.text
