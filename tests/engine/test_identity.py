"""PlanIdentity: JSON round trip, naming, and every mismatch the runtime checks."""

from __future__ import annotations

import json

import pytest

from streamer.engine import BatchProfile, Machine, PlanIdentity
from streamer.engine.identity import cc_tag, identity_path_for, normalise_cc
from streamer.errors import EngineMismatchError, ModelError

SHA = "ab" * 32


def make(**kw) -> PlanIdentity:
    fields = dict(model_name="shapes_cnn", onnx_sha256=SHA, backend="tensorrt-rtx",
                  backend_version="1.7.1.116",
                  compute_capabilities=("8.0", "8.6", "8.9", "12.0"), precision="fp16",
                  profile=BatchProfile(1, 32, 64), input_shape=(32, 32, 3), onnx_file="shapes_cnn.fp16.onnx",
                  build_seconds=1.5, plan_bytes=1000, onnx_bytes=500, pth_bytes=2000)
    fields.update(kw)
    return PlanIdentity(**fields)


def test_json_round_trip_and_file(tmp_path):
    ident = make()
    again = PlanIdentity.from_json(ident.to_json())
    assert again == ident
    assert isinstance(again.profile, BatchProfile) and again.input_shape == (32, 32, 3)
    plan = tmp_path / ident.plan_name()
    side = ident.write(plan)
    assert side == identity_path_for(plan) and side.name.endswith(".plan.json")
    assert json.loads(side.read_text())["onnx_sha256"] == SHA
    assert PlanIdentity.read(plan) == ident


def test_plan_name_keys_every_build_input():
    base = make()
    assert base.plan_name() == "shapes_cnn.abababababab.rtx1.7.1.sm80-86-89-120.fp16.b1-32-64.plan"
    variants = [make(onnx_sha256="cd" * 32), make(backend_version="1.8.0.1"),
                make(compute_capabilities=("8.6",)), make(precision="fp32"),
                make(profile=BatchProfile(1, 16, 64)), make(backend="tensorrt")]
    names = {v.plan_name() for v in variants} | {base.plan_name()}
    assert len(names) == len(variants) + 1


def test_matching_machine_has_no_mismatch():
    ident = make()
    assert ident.mismatches(Machine("tensorrt-rtx", "1.7.1.116", "8.6"), onnx_sha256=SHA, precision="fp16",
                            max_batch=64) == []
    assert ident.mismatches(Machine("tensorrt-rtx", "1.7.1.116", None)) == []  # no GPU: nothing to compare


@pytest.mark.parametrize(("machine", "expected", "needle"), [
    (Machine("tensorrt", "10.9.0", "8.6"), {}, "plan is for tensorrt-rtx"),
    (Machine("tensorrt-rtx", "1.8.0.5", "8.6"), {}, "1.7.1.116"),
    (Machine("tensorrt-rtx", "1.7.1.116", "9.0"), {}, "Hopper"),
    (Machine("tensorrt-rtx", "1.7.1.116", "7.5"), {}, "this GPU is 7.5"),
    (Machine("tensorrt-rtx", "1.7.1.116", "8.6"), {"onnx_sha256": "cd" * 32}, "another model"),
    (Machine("tensorrt-rtx", "1.7.1.116", "8.6"), {"precision": "fp32"}, "fp32 was asked for"),
    (Machine("tensorrt-rtx", "1.7.1.116", "8.6"), {"max_batch": 128}, "up to 64"),
])
def test_each_mismatch_is_named(machine, expected, needle):
    problems = make().mismatches(machine, **expected)
    assert len(problems) == 1 and needle in problems[0]
    with pytest.raises(EngineMismatchError, match=r"tools/build_engine\.py shapes_cnn\.fp16\.onnx"):
        make().check(machine, "x.plan", **expected)


def test_bad_identity_files(tmp_path):
    with pytest.raises(ModelError, match="malformed plan identity"):
        PlanIdentity.from_json("{not json")
    with pytest.raises(ModelError, match="malformed plan identity"):
        PlanIdentity.from_json(json.dumps({"model_name": "x"}))
    with pytest.raises(ModelError, match="unknown backend"):
        make(backend="openvino")
    with pytest.raises(ModelError, match="identity file missing"):
        PlanIdentity.read(tmp_path / "missing.plan")


def test_profiles_and_compute_capabilities():
    assert BatchProfile(1, 8, 8).tag == "b1-8-8"
    for bad in ((0, 1, 1), (4, 2, 8), (1, 16, 8)):
        with pytest.raises(ModelError, match="batch profile"):
            BatchProfile(*bad)
    assert [normalise_cc(c) for c in ("8.6", "86", "sm86", "SM120", (9, 0), 8.9)] == [
        "8.6", "8.6", "8.6", "12.0", "9.0", "8.9"]
    with pytest.raises(ModelError, match="compute capability"):
        normalise_cc("ampere")
    assert cc_tag(("8.0", "12.0")) == "sm80-120" and cc_tag(()) == "smany"
