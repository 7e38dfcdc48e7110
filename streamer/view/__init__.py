"""Seeing what the streamer sees: annotated video (``--annotate``) and the live preview page (``--preview``).

Beside the data flow, not in it: the batcher hands a frame's image to the :mod:`~streamer.view.tap` only when
a viewer needs it (every frame of an annotated source; a few frames a second per source while a browser
watches the preview); the image then rides with its frame's tag through the engine to the results stage,
which gives it, with its prediction, to :class:`~streamer.view.viewers.Viewers`. With neither feature on,
the batcher's cost is one ``is None`` test per frame.

- :mod:`~streamer.view.tap`: which frames a viewer takes, and how a frame becomes a host BGR image.
- :mod:`~streamer.view.draw`: the overlay drawn on annotated frames.
- :mod:`~streamer.view.annotate`: one video file per source, each encoded on its own thread.
- :mod:`~streamer.view.preview`: the newest frame of each source, JPEG-encoded while someone watches.
- :mod:`~streamer.view.viewers`: both, as one sink of the pipeline.

This package imports nothing here: the batcher imports the tap alone.
"""
