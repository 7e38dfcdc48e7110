"""One model, three precisions side by side: ``<stem>.onnx`` (fp32), ``.fp16.onnx`` and ``.int8.onnx``.

``--precision fp32|fp16|int8`` picks the sibling of the model it is given (``--model x.int8.onnx --precision
fp32`` runs ``x.onnx``); plans are built from the sibling of the requested precision (networks are strongly
typed: the precision is the ONNX's own). The fp16 graph is written by ``tools/export_onnx.py``, the int8 one
(QuantizeLinear/DequantizeLinear, explicit quantization) by ``tools/quantize.py`` after its accuracy gate.
"""

from __future__ import annotations

from pathlib import Path

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
AUTO = "auto"
_INFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}


def stem_of(path: str | Path) -> str:
    """``x.onnx``, ``x.fp16.onnx``, ``x.int8.onnx`` → ``x``."""
    name = Path(path).name.removesuffix(".onnx")
    for infix in (".fp16", ".int8"):
        name = name.removesuffix(infix)
    return name


def module_stem(path: Path) -> Path:
    """``engines/shapes_cnn.fp16.onnx`` (or ``.pt2``, ``.pth``, ``.json``) → ``engines/shapes_cnn``."""
    name = path.name
    for suffix in (".onnx", ".pt2", ".pth", ".json"):
        name = name.removesuffix(suffix)
    return path.with_name(name.removesuffix(".fp16"))


def sibling(path: Path, suffix: str) -> Path:
    """The file beside ``path`` with its module stem and ``suffix`` (``cam.v2.fp16.onnx`` + ``.pth`` →
    ``cam.v2.pth``; a stem's own dots are kept, unlike ``Path.with_suffix``)."""
    stem = module_stem(path)
    return stem.with_name(stem.name + suffix)


def variant_path(path: str | Path, precision: str) -> Path:
    """The ``precision`` sibling of an exported ONNX (``x.onnx`` + int8 → ``x.int8.onnx``)."""
    if precision not in _INFIX:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    path = Path(path)
    return path.with_name(f"{stem_of(path)}{_INFIX[precision]}.onnx")


def precision_from_name(path: str | Path) -> str:
    """What an ONNX's file name says its precision is (the manifest inside says it for sure)."""
    name = Path(path).name
    for precision, infix in _INFIX.items():
        if infix and name.endswith(f"{infix}.onnx"):
            return precision
    return "fp32"


def quantize_command(path: str | Path, dataset: str = "shapes") -> str:
    """The command that writes the int8 sibling of ``path`` (for ``shapes`` models: calibrated on its training
    split and gated on its validation split; other models name their own images)."""
    calib = "--calib shapes" if dataset == "shapes" else "--calib IMAGES_OR_VIDEO --eval LABELLED_FOLDER"
    return f"python tools/quantize.py {variant_path(path, 'fp32')} {calib}"


def sibling_hint(path: str | Path, precision: str, dataset: str = "shapes") -> str:
    """How to make the missing ``precision`` sibling of ``path`` (``dataset``: the model's, for int8)."""
    if precision == "int8":
        return f"make it (calibrated, accuracy-gated): {quantize_command(path, dataset)}"
    return f"export it with tools/export_onnx.py {variant_path(path, 'fp32').with_suffix('.pth')}"
