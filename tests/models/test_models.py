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


def _metadata_only_gguf(path):
    """A GGUF file with a 2-layer Llama's metadata and a 300-token vocabulary, no tensors: enough for a config."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(300)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(300)])
    writer.add_token_types([1] * 300)
    writer.add_token_merges([])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_config_is_read_once_then_from_the_model_cache(tmp_path, monkeypatch):
    """`odyssey models` parsed each packaged GGUF's whole header on every call (~12 s each on two cores)."""
    import json
    import os

    monkeypatch.setenv("ODYSSEY_MODEL_CACHE", str(tmp_path / "cache"))
    gguf_file = _metadata_only_gguf(tmp_path / "m.gguf")
    first = describe(str(gguf_file))
    assert first.available and first.architecture == "llama" and first.context_length == 256
    (cached,) = (tmp_path / "cache" / "gguf-configs").glob("*/config.json")
    assert json.loads(cached.read_text())["num_hidden_layers"] == 2
    assert describe(str(gguf_file)).as_dict() == first.as_dict()
    # The second read came from the cache: a (hand-edited) cached config is what describe sees.
    cached.write_text(cached.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    assert describe(str(gguf_file)).n_params > first.n_params
    # A changed file is a new key: read from the file again.
    stat = gguf_file.stat()
    os.utime(gguf_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert describe(str(gguf_file)).as_dict() == first.as_dict()


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
