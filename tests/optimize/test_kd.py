"""The distillation loss and the teacher-logit cache."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from odyssey.optimize.common import collate  # noqa: E402
from odyssey.optimize.distillation import cache_teacher, kd_loss  # noqa: E402


def _batch(vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 2, 7, -100, -100]])
    student = torch.randn(2, 5, vocab, generator=g)
    teacher = torch.randn(2, 5, vocab, generator=g)
    return student, teacher, labels


def test_kl_is_zero_when_student_equals_teacher():
    student, _, labels = _batch()
    loss, parts = kd_loss(student, labels, 2.0, 1.0, teacher_logits=student.clone())
    assert abs(parts["kl"]) < 1e-6 and abs(float(loss)) < 1e-5
    assert parts["tokens"] == 5  # positions whose next token is a reference token


def test_alpha_zero_is_plain_cross_entropy():
    student, teacher, labels = _batch()
    loss, parts = kd_loss(student, labels, 2.0, 0.0, teacher_logits=teacher)
    shifted = student[:, :-1].reshape(-1, student.shape[-1])
    expected = torch.nn.functional.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert parts["kl"] > 0


def test_full_top_k_cache_equals_full_kl_and_temperature_scaling():
    student, teacher, labels = _batch()
    vocab = student.shape[-1]
    mask = labels[:, 1:].ne(-100)
    sel = teacher[:, :-1][mask]
    top = sel.topk(vocab, dim=-1)
    cache = {"values": top.values, "indices": top.indices.int(), "offsets": torch.tensor([0, 3, 5])}
    full, _ = kd_loss(student, labels, 3.0, 1.0, teacher_logits=teacher)
    cached, _ = kd_loss(student, labels, 3.0, 1.0, cache=cache, index=torch.tensor([0, 1]))
    assert float(cached) == pytest.approx(float(full), rel=1e-5)
    # alpha * T^2 * KL: the soft term is scaled by T^2
    _, parts = kd_loss(student, labels, 3.0, 1.0, teacher_logits=teacher)
    assert float(full) == pytest.approx(9 * parts["kl"], rel=1e-5)


def test_cache_mismatch_is_a_clear_error():
    student, teacher, labels = _batch()
    cache = {
        "values": torch.zeros(2, 3),
        "indices": torch.zeros(2, 3, dtype=torch.int32),
        "offsets": torch.tensor([0, 1, 2]),
    }
    from odyssey.errors import OdysseyError

    with pytest.raises(OdysseyError, match="teacher cache"):
        kd_loss(student, labels, 2.0, 0.5, cache=cache, index=torch.tensor([0, 1]))


def test_cache_teacher_writes_top_k_per_completion_token(tmp_path):
    class Teacher(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            logits = torch.nn.functional.one_hot(input_ids % 7, 7).float() * 5
            return type("Out", (), {"logits": logits})()

    items = [
        {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
        {"input_ids": [5, 6, 1], "labels": [-100, 6, 1]},
    ]
    data = cache_teacher(Teacher(), items, collate(0), 2, tmp_path / "cache.safetensors", batch_size=2)
    assert data["offsets"].tolist() == [0, 2, 4]
    assert data["values"].shape == (4, 2)
    # the teacher's argmax at the positions predicting token 3 and 4 is the input token there (2 and 3)
    assert data["indices"][:, 0].tolist() == [2, 3, 5, 6]
    again = cache_teacher(None, items, collate(0), 2, tmp_path / "cache.safetensors")  # read back, no teacher
    assert torch.equal(again["indices"], data["indices"])


def test_kl_over_all_positions_counts_prompt_tokens_and_keeps_ce_on_references():
    from odyssey.optimize.distillation import kd_positions

    student, teacher, labels = _batch()
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    batch = {"labels": labels, "attention_mask": attention}
    everywhere = kd_positions(batch, "all")
    assert everywhere.sum() == 4 + 2  # every position that predicts a real next token
    assert torch.equal(kd_positions(batch, "completion"), labels[:, 1:].ne(-100))
    loss_all, parts_all = kd_loss(student, labels, 2.0, 0.5, teacher_logits=teacher, kd_mask=everywhere)
    _, parts_ref = kd_loss(student, labels, 2.0, 0.5, teacher_logits=teacher)
    assert parts_all["kd_tokens"] == 6 and parts_ref["kd_tokens"] == 5
    assert parts_all["ce"] == pytest.approx(parts_ref["ce"])  # the CE stays on the reference tokens
    assert parts_all["kl"] != pytest.approx(parts_ref["kl"])
    # the KL over all positions is the mean of per-position KLs over exactly those positions
    log_s = torch.log_softmax(student[:, :-1][everywhere] / 2.0, -1)
    log_t = torch.log_softmax(teacher[:, :-1][everywhere] / 2.0, -1)
    expected = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
    assert parts_all["kl"] == pytest.approx(float(expected), rel=1e-5)


def test_cache_teacher_over_all_positions(tmp_path):
    class Teacher(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.nn.functional.one_hot(input_ids % 7, 7).float()})()

    items = [
        {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
        {"input_ids": [5, 6, 1], "labels": [-100, 6, 1]},
    ]
    data = cache_teacher(Teacher(), items, collate(0), 2, tmp_path / "all.safetensors", batch_size=2, positions="all")
    assert data["offsets"].tolist() == [0, 3, 5]  # 3 + 2 positions predict a real next token
    assert data["indices"][:, 0].tolist() == [1, 2, 3, 5, 6]
