"""The run form the Prefect UI makes from a deployment's parameter schema, and the request behind it.

The deployments are built as `accelflow server` builds them (flows/service/serve.py); `accelflow
deploy` applies the same flow from prefect.yaml, so its schema is the same.
"""

from __future__ import annotations

import pytest
from accelflow.core.errors import DeviceError, EngineError, SpecError
from accelflow.core.levels import LEVELS
from accelflow.flows.request import OptimizeRequest

from accelflow import engines

BASE = {"model": "m.onnx", "tensor_info": ["x:float(1*4)"]}


@pytest.fixture(scope="module")
def form() -> dict:
    """The request's properties in the first served deployment's schema (what the form shows)."""
    from accelflow.flows.service.serve import deployments

    schema = deployments()[0]._parameter_openapi_schema.model_dump()
    assert schema["properties"]["request"]["$ref"] == "#/definitions/OptimizeRequest"
    return schema["definitions"]["OptimizeRequest"]


def test_choices_are_selects_listing_what_accelflow_knows(form):
    props = form["properties"]
    assert props["level"]["enum"] == list(LEVELS) and props["level"]["default"] == "fp16"
    assert props["engine"]["enum"] == ["auto", *(e.NAME for e in engines.ENGINES)]
    assert set(engines.CPU_DEVICES + engines.GPU_DEVICES) <= set(props["device"]["enum"])
    assert props["device"]["default"] == "cpu"


def test_every_field_is_described_without_markup_and_optional_ones_are_plain_inputs(form):
    for name, prop in form["properties"].items():
        assert prop.get("description"), f"{name} has no description"
        assert "<" not in prop["description"] and ">" not in prop["description"], name  # the UI strips <...>
        assert "anyOf" not in prop, f"{name}: the UI shows a type picker ('Property is type None')"
        assert prop.get("type") in ("string", "array", "boolean", "integer", "number", "object"), name
    assert form["required"] == ["model", "tensor_info"]
    for name, field in OptimizeRequest.model_fields.items():  # the form starts at the defaults; None: empty
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if default is not None:
            assert form["properties"][name]["default"] == default, name


def test_internal_fields_are_not_in_the_request(form):
    for internal in ("submitted_at", "retry_of", "resource_group"):
        assert internal not in form["properties"] and internal not in OptimizeRequest.model_fields


@pytest.mark.parametrize("field,given,canonical", [
    ("level", "FP16", "fp16"), ("level", "Lossless", "lossless"), ("device", "CPU", "cpu"),
    ("device", "cpu-Zen4", "cpu-zen4"), ("device", "A10G", "a10g"), ("engine", "OpenVINO", "openvino"),
])
def test_the_cli_spellings_are_still_accepted_and_made_canonical(field, given, canonical):
    assert getattr(OptimizeRequest(**BASE, **{field: given}), field) == canonical


@pytest.mark.parametrize("field,given,error,match", [
    ("level", "int3", SpecError, "choose fp16, lossless or int8"),
    ("device", "tpu9", DeviceError, "unknown device 'tpu9'"),
    ("engine", "tvm", EngineError, "unknown engine 'tvm'; choose one of: auto, onnxruntime"),
])
def test_unknown_choices_are_refused_with_the_choices(field, given, error, match):
    with pytest.raises(error, match=match):
        OptimizeRequest(**BASE, **{field: given})


def test_a_request_stored_by_an_older_accelflow_still_loads():
    """`tasks show` and `tasks retry` read run.parameters["request"] back, internal fields and all."""
    stored = dict(BASE, level="lossless", device="cpu", name="old", submitted_at=1.7e9, retry_of="1234",
                  resource_group="g1", output="/out")
    request = OptimizeRequest.model_validate(stored)
    assert (request.level, request.name, request.output) == ("lossless", "old", "/out")
    assert "submitted_at" not in request.model_dump()


def test_each_deployments_form_starts_at_its_machine_type():
    """A run made in optimize/a10's form is for a10 unless the user picks otherwise."""
    import yaml
    from accelflow.flows.prefect_yaml import ROOT
    from accelflow.flows.service.serve import deployments

    with open(f"{ROOT}/prefect.yaml", encoding="utf-8") as f:
        fleet = yaml.safe_load(f)["deployments"]
    assert [d["parameters"] for d in fleet] == [{"request": {"device": d["name"]}} for d in fleet]
    assert [d.parameters for d in deployments()] == [{"request": {"device": d.name}} for d in deployments()]
