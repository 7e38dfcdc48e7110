"""``--annotate`` and ``--preview`` as one sink of the pipeline (:class:`Viewers`).

The pipeline gives the batcher ``viewers.tap`` and the results stage ``viewers.show``: each prediction whose
frame the tap took arrives there with its image, in order. As a sink it also learns when a source ends (its
video is finished then) and is closed with the other sinks, after the last prediction.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import Settings
from streamer.errors import StreamerError
from streamer.intake import Intake
from streamer.protocol import Prediction
from streamer.sinks import Sink
from streamer.sources import Policy
from streamer.view.annotate import AnnotatePlan, Annotator
from streamer.view.preview import PreviewHub
from streamer.view.tap import FrameTap

log = logging.getLogger(__name__)


class Viewers(Sink):
    name = "viewers"

    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self.tap = FrameTap(1.0 / settings.preview_fps)
        self.preview = PreviewHub(self.tap, settings.preview_width) if settings.preview else None
        self.plan: AnnotatePlan | None = None
        self.annotator: Annotator | None = None

    @classmethod
    def create(cls, settings: Settings, intake: Intake) -> Viewers | None:
        """The viewers the settings ask for; None when neither --annotate nor --preview is on (then the
        batcher has no tap at all)."""
        if not settings.annotate and not settings.preview:
            return None
        return cls(settings, intake)

    def outputs(self) -> dict[str, tuple[str, str]]:
        """The annotated videos as streamer.outputs.check_outputs checks them (the sources are open):
        ConfigError for an --annotate path that cannot be used."""
        if not self.settings.annotate:
            return {}
        names = [src.name for src in self.intake.sources]
        self.plan = AnnotatePlan.resolve(self.settings.annotate, names, self.settings.keep_running)
        return self.plan.outputs(names)

    # -- Sink ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.settings.annotate:
            if self.plan is None:
                self.outputs()
            assert self.plan is not None
            self.annotator = Annotator(self.plan, self._source_info, copy_frames=self.preview is not None,
                                       inputs=self._inputs)
            self.annotator.start()
            if self.plan.file is not None:
                self.tap.annotated = frozenset(src.name for src in self.intake.sources)
            else:
                self.tap.annotate_all = True

    def show(self, pred: Prediction, image: np.ndarray) -> None:
        """A prediction and its frame's image (results thread, in order)."""
        if self.annotator is not None and (self.tap.annotate_all or pred.source in self.tap.annotated):
            self.annotator.show(pred, image)
        if self.preview is not None:
            self.preview.show(pred, image)

    def end(self, source: str, frames: int, reason: str, skipped: int = 0) -> None:
        if self.annotator is not None:
            self.annotator.end(source)

    def close(self) -> None:
        """Every video finished and in place; StreamerError (the CLI's one line, exit 2) when one could not
        be written, like any output of the run."""
        if self.preview is not None:
            self.preview.close()
        if self.annotator is None:
            return
        self.annotator.close()
        failed = [r for r in self.annotator.reports() if r.error]
        if failed:
            raise StreamerError(f"--annotate: {failed[0].path} could not be written: {failed[0].error}"
                                + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
                                "free disk space or choose another path; the predictions were published")

    def summary(self) -> dict[str, Any]:
        """The summary's ``annotate`` (one entry per video) and ``preview`` (JPEGs encoded)."""
        out: dict[str, Any] = {}
        if self.annotator is not None:
            out["annotate"] = [dataclasses.asdict(r) for r in self.annotator.reports()]
        if self.preview is not None:
            out["preview"] = {"jpegs": self.preview.encoded}
        return out

    # -- what the annotator asks about sources --------------------------------------------------------------
    def _source_info(self, name: str) -> tuple[float | None, bool]:
        for src, buf in self.intake.entries():
            if src.name == name:
                return src.fps, buf.policy is Policy.BLOCK
        return None, False

    def _inputs(self) -> list[Path]:
        return [p for src, _ in self.intake.entries() for p in src.input_files()]
