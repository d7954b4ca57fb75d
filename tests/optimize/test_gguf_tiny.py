"""GGUF quantization of a model whose BPE tokenizer llama.cpp's converter does not know by hash (Odyssey's
tiny models, a user's retrained tokenizer): the pre-tokenizer read from tokenizer.json is written into
the file, so llama.cpp splits text as the model was trained to."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_project


def _quantize_built() -> bool:
    from odyssey.errors import OdysseyError
    from odyssey.models import llamacpp

    try:
        return llamacpp.available("llama-quantize")
    except OdysseyError:
        return False


@pytest.mark.skipif(not _quantize_built(), reason="llama-quantize is not built (scripts/setup.sh builds it)")
def test_gguf_quantize_of_a_tiny_model_names_its_pre_tokenizer(tmp_path):
    from gguf import GGUFReader

    from odyssey.optimize import quantize
    from odyssey.project import Project

    project = Project.load(tiny_project(tmp_path / "p"))
    result = quantize(project, "gguf:q8_0", start_from="tiny:llama", measure=False)
    field = GGUFReader(result.model_ref).fields["tokenizer.ggml.pre"]
    assert bytes(field.parts[field.data[0]]).decode() == "gpt-2"
