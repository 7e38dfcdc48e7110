"""``--source demo``: the bundled shapes clip (made on first use by the model side) with its ground truth."""

from __future__ import annotations

from pathlib import Path

from streamer.errors import SourceError
from streamer.sources.video import VideoFileSource

DEMO_NAME = "demo"


class DemoSource(VideoFileSource):
    """A video file source whose frames have known labels (``truth_path``, JSON) for an accuracy check."""

    kind = "demo"

    def __init__(self, name: str = DEMO_NAME, *, realtime: bool = False) -> None:
        video, truth = demo_clip()
        super().__init__(video, name, realtime=realtime)
        self.spec = DEMO_NAME
        self.truth_path = Path(truth)


def demo_clip() -> tuple[Path, Path]:
    try:
        from streamer.model.demo import ensure_demo_clip
    except ImportError as exc:
        raise SourceError("the demo clip is not available in this installation (streamer.model.demo)",
                          "pass a video file or a camera to --source") from exc
    video, truth = ensure_demo_clip()
    return Path(video), Path(truth)
