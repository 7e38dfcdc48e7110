"""What loading a model takes (use, build or rebuild its plan), with real TensorRT-RTX plans built here on the
CPU (a tiny model of the real contract).

A GPU is simulated by passing a :class:`streamer.engine.Machine` with the compute capability to test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamer_helpers import make_color_model

from streamer.engine import Machine, flavour, plans
from streamer.errors import EngineMismatchError, ModelError

pytestmark = pytest.mark.skipif(not flavour.installed("tensorrt-rtx"), reason="tensorrt_rtx is not installed")
RTX = "tensorrt-rtx"


def machine(cc: str | None = "8.9", version: str | None = None, backend: str = RTX) -> Machine:
    return Machine(backend, version or flavour.import_flavour(RTX).version, cc)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_color_model(tmp_path / "color.onnx")


def _resolve(path: Path, **kw):
    args = {"flavour": RTX, "machine": machine(), "max_batch": 8, **kw}
    return plans.resolve_plan(path, **args)


def _prepare(path: Path, **kw):
    args = {"flavour": RTX, "machine": machine(), "max_batch": 8, **kw}
    return plans.prepare_plan(path, **args)


def test_onnx_without_a_plan_is_built_then_reused(model: Path) -> None:
    decision = _resolve(model)
    assert (decision.action, decision.plan, decision.onnx) == ("build", None, model)
    assert decision.precision == "fp32"
    plan, identity, done = _prepare(model)
    assert done.action == "build"
    assert plan.parent == model.parent / "plans" and plan.suffix == ".plan" and plan.stat().st_size > 0
    assert identity.compute_capabilities == ("8.9",) and identity.profile.max == 8
    again = _resolve(model)
    assert (again.action, again.plan) == ("use", plan)
    assert _resolve(model, max_batch=4).action == "use"  # a smaller batch fits the same plan


def test_a_given_plan_that_fits_is_used(model: Path) -> None:
    plan, _, _ = _prepare(model)
    decision = _resolve(plan)
    assert (decision.action, decision.plan, decision.onnx) == ("use", plan, model)


@pytest.mark.parametrize(("change", "expected"), [
    ({"machine": "cc8.6"}, "targets compute capability 8.9, this GPU is 8.6"),
    ({"machine": "version"}, "plan was built with tensorrt-rtx"),
    ({"max_batch": 16}, "plan takes batches up to 8, 16 was asked for"),
])
def test_a_plan_that_does_not_fit_is_rebuilt_and_says_why(model: Path, change: dict, expected: str) -> None:
    plan, _, _ = _prepare(model)
    kw: dict = {}
    if change.get("machine") == "cc8.6":
        kw["machine"] = machine("8.6")
    elif change.get("machine") == "version":
        kw["machine"] = machine(version="0.9.0")
    else:
        kw.update(change)
    for path in (model, plan):  # through the ONNX (the cached plan) and given the plan itself
        decision = _resolve(path, **kw)
        assert decision.action == "rebuild"
        assert any(expected in r for r in decision.reasons), decision.reasons


def test_a_rebuilt_plan_fits_the_new_machine(model: Path) -> None:
    _prepare(model)
    plan, identity, decision = _prepare(model, machine=machine("8.6"))
    assert decision.action == "rebuild"
    assert identity.compute_capabilities == ("8.6",)
    assert _resolve(model, machine=machine("8.6")).plan == plan
    given = _prepare(plan, machine=machine("8.0"))  # a given plan is rebuilt in place
    assert given[0] == plan and given[1].compute_capabilities == ("8.0",)


def test_a_changed_model_invalidates_its_plan(model: Path) -> None:
    plan, _, _ = _prepare(model)
    make_color_model(model, labels=("blue", "green", "red", "grey"))  # same name, other weights and classes
    decision = _resolve(plan)
    assert decision.action == "rebuild"
    assert any("built from another model" in r for r in decision.reasons)
    assert _resolve(model).action == "rebuild"


def test_a_truncated_plan_is_a_clear_error_without_its_onnx(model: Path, tmp_path: Path) -> None:
    plan, _, _ = _prepare(model)
    lone = tmp_path / "elsewhere" / "plans"  # neither beside the ONNX nor one folder below it
    lone.mkdir(parents=True)
    copy = lone / plan.name
    shutil.copy(plan, copy)
    shutil.copy(plan.with_name(plan.name + ".json"), lone)
    with open(copy, "r+b") as f:
        f.truncate(copy.stat().st_size // 2)
    with pytest.raises(EngineMismatchError) as info:
        _resolve(copy)
    message = str(info.value)
    assert "truncated" in message and "no ONNX beside it" in message
    assert "python tools/build_engine.py color.onnx --backend tensorrt-rtx --precision fp32" in message
    assert "\n" not in message


def test_a_truncated_plan_beside_its_onnx_is_rebuilt(model: Path) -> None:
    plan, identity, _ = _prepare(model)
    with open(plan, "r+b") as f:
        f.truncate(100)
    decision = _resolve(model)
    assert decision.action == "rebuild" and any("truncated" in r for r in decision.reasons)
    new_plan, new_identity, _ = _prepare(model)
    assert new_plan.stat().st_size == new_identity.plan_bytes == identity.plan_bytes


def test_rebuild_off_refuses_with_the_command(model: Path) -> None:
    plan, _, _ = _prepare(model)
    with pytest.raises(EngineMismatchError, match=r"rebuilding is off.*tools/build_engine\.py"):
        _resolve(plan, machine=machine("8.6"), rebuild=False)
    shutil.rmtree(plan.parent)
    with pytest.raises(EngineMismatchError, match=r"no usable tensorrt-rtx plan .*build one: python tools/"):
        _resolve(model, rebuild=False)


def test_plans_of_another_precision_or_backend_are_not_candidates(model: Path) -> None:
    import json

    plan, _, _ = _prepare(model)
    side = plan.with_name(plan.name + ".json")
    identity = json.loads(side.read_text())
    identity["precision"] = "fp16"  # now an fp16 plan of this model: it does not make the fp32 one stale
    side.write_text(json.dumps(identity))
    decision = _resolve(model)
    assert (decision.action, decision.reasons) == ("build", ())


def test_a_plan_without_its_identity_is_refused(model: Path) -> None:
    plan, _, _ = _prepare(model)
    plan.with_name(plan.name + ".json").unlink()
    with pytest.raises(EngineMismatchError, match="cannot tell what this plan was built for"):
        _resolve(plan)
    assert _resolve(model).action == "build"  # through the ONNX: an unidentified plan is just ignored


def test_hopper_is_refused_with_the_way_out(model: Path) -> None:
    plan, _, _ = _prepare(model)
    for path in (model, plan):
        with pytest.raises(EngineMismatchError) as info:
            _resolve(path, machine=machine("9.0"))
        assert "compute capability 9.0" in str(info.value) and "--backend torch" in str(info.value)


def test_fp16_needs_an_fp16_onnx(model: Path) -> None:
    with pytest.raises(ModelError, match="strongly typed"):
        _resolve(model, precision="fp16")


def test_other_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        _resolve(tmp_path / "missing.onnx")
    other = tmp_path / "model.pt2"
    other.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"takes an \.onnx or a \.plan"):
        _resolve(other)


def test_build_command_names_the_fp32_onnx() -> None:
    cmd = plans.build_command(Path("engines/shapes_cnn.fp16.onnx"), RTX, "fp16", 64)
    assert cmd == ("python tools/build_engine.py engines/shapes_cnn.onnx --backend tensorrt-rtx "
                   "--precision fp16 --max-batch 64")




def test_a_model_folder_that_cannot_be_written_caches_its_plans_for_the_user(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = tmp_path / "site-packages"
    shipped.mkdir()
    model = make_color_model(shipped / "color.onnx")
    cache = tmp_path / "cache"
    monkeypatch.setenv(plans.CACHE_ENV, str(cache))
    assert plans.plans_dir_for(model) == shipped / "plans"  # writable: beside the model
    # as for a package installed by another user (root writes anywhere, so its answer is stood in for)
    monkeypatch.setattr(plans, "writable", lambda folder: not folder.is_relative_to(shipped))
    assert plans.plans_dir_for(model) == cache
    plan, _, decision = _prepare(model)
    assert decision.action == "build" and plan.parent == cache
    assert _resolve(model).plan == plan
