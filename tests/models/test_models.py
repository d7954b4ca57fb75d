import pytest

from odyssey.errors import OdysseyError
from odyssey.models import (
    FAMILY_DECODER,
    FAMILY_ENCODER,
    FAMILY_SEQ2SEQ,
    catalog,
    describe,
    load,
    parse_ref,
    read_model_card,
)
from odyssey.models.memory import GB, Shape, estimate


@pytest.mark.parametrize(
    "ref,family,head",
    [
        ("tiny:llama", FAMILY_DECODER, "LlamaForCausalLM"),
        ("tiny:gpt2", FAMILY_DECODER, "GPT2LMHeadModel"),
        ("tiny:bert", FAMILY_ENCODER, "BertForMaskedLM"),
        ("tiny:t5", FAMILY_SEQ2SEQ, "T5ForConditionalGeneration"),
        ("tiny:bart", FAMILY_SEQ2SEQ, "BartForConditionalGeneration"),
    ],
)
def test_every_family_loads_through_the_resolver(ref, family, head):
    loaded = load(ref)
    assert loaded.family == family
    assert type(loaded.model).__name__ == head
    assert loaded.tokenizer.pad_token is not None
    assert 10_000 < loaded.n_params < 2_000_000
    ids = loaded.tokenizer("#Person1#: Hello there!")["input_ids"]
    assert loaded.tokenizer.decode(ids, skip_special_tokens=True) == "#Person1#: Hello there!"


def test_parse_ref_kinds_and_errors(tmp_path):
    assert parse_ref("packaged:smollm2-135m-instruct").kind == "packaged"
    assert parse_ref("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert parse_ref(str(tmp_path / "m")).kind == "local"
    with pytest.raises(OdysseyError, match="unknown packaged model 'smollm3'"):
        parse_ref("packaged:smollm3")
    with pytest.raises(OdysseyError, match="model folder not found"):
        parse_ref("./nowhere")
    with pytest.raises(OdysseyError, match="GGUF file not found"):
        parse_ref("x.gguf")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from odyssey.errors import Unavailable

    with pytest.raises(Unavailable, match="could not fetch 'nobody/no-such-model'"):
        load("nobody/no-such-model")


def test_memory_estimate_by_the_rules():
    shape = Shape(n_params=100_000_000, n_layers=10, hidden=512, n_heads=8, n_kv_heads=8, vocab=32000, context=2048)
    est = estimate(shape, batch=1, seq=128, lora_fraction=0.01)
    kv = 2 * 10 * 8 * 64 * 128 * 4 / GB  # K,V x layers x kv heads x head dim x tokens x fp32
    assert est.kv_cache_gb == pytest.approx(kv)
    assert est.inference_gb["fp32"] == pytest.approx(4e8 / GB + kv)
    assert est.inference_gb["int8"] == pytest.approx(1e8 / GB + kv)
    act = est.detail["activations_gb"]
    assert est.train_full_gb == pytest.approx(16e8 / GB + act)  # 4 weights + 4 grads + 8 Adam
    assert est.train_lora_gb == pytest.approx((4e8 + 1e6 * 16) / GB + act)
    assert est.train_lora_gb < est.train_full_gb / 2


def test_catalog_lists_packaged_and_tiny_with_notes():
    infos = {i.ref: i for i in catalog(include_tiny=True)}
    assert infos["tiny:t5"].family == FAMILY_SEQ2SEQ and infos["tiny:t5"].objective.startswith("span corruption")
    assert infos["tiny:bert"].objective == "masked LM"
    assert infos["tiny:llama"].memory_gb["inference_gb"]["fp32"] > infos["tiny:llama"].memory_gb["inference_gb"]["int8"]
    assert "packaged:smollm2-135m-instruct" in infos


def test_model_card_is_read(tmp_path):
    (tmp_path / "README.md").write_text(
        "---\nlicense: apache-2.0\ntags: [chat]\n---\n# Title\n\nA small helpful model.\n"
    )
    card = read_model_card(tmp_path)
    assert card == {"license": "apache-2.0", "tags": ["chat"], "summary": "A small helpful model."}


@pytest.mark.slow
def test_packaged_smollm2_converts_once_and_describes():
    info = describe("packaged:smollm2-135m-instruct")
    if not info.available:
        pytest.skip(info.note)
    loaded = load("packaged:smollm2-135m-instruct")
    assert loaded.family == FAMILY_DECODER and loaded.model.config.model_type == "llama"
    assert 130e6 < loaded.n_params < 140e6
    assert not hasattr(loaded.model.config, "quantization_config")
    assert (loaded.path / "model.safetensors").exists()
    assert loaded.tokenizer.chat_template
    text = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>assistant" in text
