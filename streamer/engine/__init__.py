"""Engine plans: build TensorRT / TensorRT-RTX plans from exported ONNX, and say what each plan is for.

- :mod:`streamer.engine.steps` — composable steps: NetworkFromOnnx → CreateConfig → BuildPlan → SavePlan;
- :mod:`streamer.engine.build` — :func:`build_engine`: pick the ONNX for a precision, build or reuse a plan;
- :mod:`streamer.engine.identity` — :class:`PlanIdentity` (``<plan>.json``) and :class:`Machine` checks;
- :mod:`streamer.engine.flavour` — TensorRT or TensorRT-RTX: modules, install hints, the GPUs they run on;
- :mod:`streamer.engine.plans` — what loading a model takes on this machine: use, build or rebuild its plan.
"""

from __future__ import annotations

from streamer.engine.identity import BatchProfile, Machine, PlanIdentity

__all__ = ["BatchProfile", "Machine", "PlanIdentity"]
