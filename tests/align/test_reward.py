import json
import math

import pytest

from odyssey.align.reward import RewardModel, calibration_bins, pairwise_accuracy, train_reward_model
from odyssey.project import Project
from tests.conftest import tiny_project


def test_pairwise_accuracy_and_calibration():
    assert pairwise_accuracy([2.0, 1.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx(0.5)  # win, tie, loss
    # A well-separated model: confident and right, so the top bin is near 1 and the bottom near 0.
    table, ece = calibration_bins([5.0] * 10, [0.0] * 10)
    assert table[0]["observed"] == 0.0 and table[-1]["observed"] == 1.0
    assert ece == pytest.approx(1 - 1 / (1 + math.exp(-5)), abs=1e-6)
    # Confident and wrong half the time: badly calibrated.
    _, bad = calibration_bins([5.0, 0.0] * 5, [0.0, 5.0] * 5)
    assert bad > 0.4


def test_reward_model_learns_a_preference_and_is_recorded(tmp_path):
    """Polite answers preferred over rude ones: the Bradley-Terry model must rank held-out pairs right."""
    from odyssey.align.preferences import build_preferences
    from odyssey.store.align import reward_model

    root = tiny_project(tmp_path / "p")
    topics = [
        "the bus",
        "lunch",
        "the report",
        "a meeting",
        "the weather",
        "a movie",
        "the bill",
        "my keys",
        "the train",
        "dinner",
        "the party",
        "a book",
        "the exam",
        "the garden",
        "a gift",
        "the car",
    ]
    rows = [
        {
            "prompt": f"Tell me about {t}.\n",
            "chosen": f"Thank you, happy to help with {t}.",
            "rejected": f"Shut up, stupid idiot, {t} is crap.",
        }
        for t in topics
    ]
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = (root / "odyssey.yaml").read_text()
    (root / "odyssey.yaml").write_text(
        spec + "align:\n  reward: {epochs: 4, learning_rate: 0.003, batch_size: 4, held_out: 0.25}\n"
    )
    project = Project.load(root)
    build_preferences(project, sources=[{"kind": "file", "path": "prefs.jsonl"}])
    result = train_reward_model(project)
    assert result.metrics["held_out_pairs"] == 4 and result.metrics["train_pairs"] == 12
    assert result.metrics["reward_accuracy"] == 1.0
    assert (tmp_path / "p").exists() and result.plot.endswith(".png")
    row = reward_model(project.store)
    assert row["name"] == result.name and row["preference_set_id"] == result.preference_set
    rm = RewardModel(result.path)
    scores = rm.score(
        ["Tell me about a new topic.\n"] * 2, ["Thank you, happy to help with it.", "Shut up, stupid idiot."]
    )
    assert scores[0] > scores[1]
    # Normalized over the training responses: mean about 0, spread about 1.
    train_scores = rm.score(
        [r["prompt"] for r in rows] * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    )
    assert abs(sum(train_scores) / len(train_scores)) < 0.5
