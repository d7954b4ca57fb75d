"""Method names, hardware checks and spec validation: bad requests fail before any work."""

from __future__ import annotations

import pytest

from odyssey.errors import OdysseyError, SpecError
from odyssey.optimize.methods import check_hardware, check_sparsity, parse_quant_method


@pytest.mark.parametrize(
    "text,name,backend,detail",
    [
        ("int8", "int8", "auto", "int8"),
        ("INT8", "int8", "auto", "int8"),
        ("int8-x86", "int8-x86", "x86", "int8-x86"),
        ("int8-torchao", "int8-torchao", "torchao", "int8-torchao"),
        ("int8wo", "int8-weight-only", "torchao", "int8-weight-only"),
        ("int4", "int4", "torchao", "int4"),
        ("gguf:q4_k_m", "gguf:q4_k_m", "gguf", "q4_k_m"),
        ("q8_0", "gguf:q8_0", "gguf", "q8_0"),
        ("gguf", "gguf:q4_k_m", "gguf", "q4_k_m"),
        ("bnb-nf4", "bnb-nf4", "bitsandbytes", "bnb-nf4"),
    ],
)
def test_parse_quant_method(text, name, backend, detail):
    method = parse_quant_method(text)
    assert (method.name, method.backend, method.detail) == (name, backend, detail)
    assert method.needs_gpu == (backend == "bitsandbytes")


def test_int8_picks_the_x86_engine_on_a_cpu_that_has_it():
    import torch

    from odyssey.optimize.methods import resolve_auto

    resolved = resolve_auto(parse_quant_method("int8"))
    x86 = not torch.cuda.is_available() and "x86" in torch.backends.quantized.supported_engines
    assert resolved.name == ("int8-x86" if x86 else "int8-torchao")
    assert resolve_auto(parse_quant_method("int8-torchao")).name == "int8-torchao"  # explicit names stay


def test_unknown_method_suggests_the_closest():
    with pytest.raises(OdysseyError) as err:
        parse_quant_method("gguf:q4_k_n")
    assert "gguf:q4_k_m" in err.value.hint


def test_bitsandbytes_without_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(OdysseyError) as err:
        check_hardware(parse_quant_method("bnb-int8"))
    assert "GPU" in str(err.value) and "int8" in err.value.hint
    check_hardware(parse_quant_method("int8"))  # CPU methods pass


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, "abc", None])
def test_sparsity_outside_open_unit_interval(bad):
    with pytest.raises(OdysseyError):
        check_sparsity(bad)


def test_sparsity_inside():
    assert check_sparsity("0.25") == 0.25


def test_spec_rejects_unknown_quant_method_and_bad_sparsity(tmp_path):
    from odyssey.project import Project
    from tests.conftest import tiny_project

    root = tiny_project(tmp_path / "p")
    text = (root / "odyssey.yaml").read_text()
    (root / "odyssey.yaml").write_text(text + "optimize:\n  quantize:\n    to: [int9]\n  prune:\n    sparsity: 1.5\n")
    with pytest.raises(SpecError) as err:
        Project.load(root)
    problems = "\n".join(err.value.problems)
    assert "optimize.quantize.to" in problems and "int8" in problems
    assert "optimize.prune.sparsity" in problems
