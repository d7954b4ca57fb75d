"""The AI judge through a real HTTP server speaking the OpenAI chat-completions protocol, and the real openai client."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from odyssey.align.judge import EndpointJudge, judge_pairs, judge_prompt, parse_verdict
from odyssey.project import Project
from tests.conftest import tiny_project


class _Judge(BaseHTTPRequestHandler):
    """Answers 'A' or 'B': whichever response does not contain the word 'rude' (a rubric a test can check)."""

    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        _Judge.seen.append((self.path, body["model"], text))
        a = text.split("Response A:")[1].split("Response B:")[0]
        answer = "B" if "rude" in a else "A"
        reply = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": f"Response {answer}"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


@pytest.mark.parametrize("text,verdict", [("A", "A"), ("Response B", "B"), ("**b** is better", "B"), ("neither", None)])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_endpoint_judge_ranks_pairs_and_keeps_prompt_and_verdict(tmp_path, server):
    project = Project.load(tiny_project(tmp_path / "p"))
    project.spec.align.judge.endpoint = server
    project.spec.align.judge.model = "judge-model"
    judge = EndpointJudge(server, "judge-model")
    samples = [["a polite answer", "a rude answer"], ["a rude reply", "a kind reply"], ["same", "same"]]
    pairs = judge_pairs(project, ["p1", "p2", "p3"], samples, judge=judge, seed=3)
    assert len(pairs) == 2  # identical samples are not a pair
    assert [p["chosen"] for p in pairs] == ["a polite answer", "a kind reply"]
    assert all("rude" in p["rejected"] for p in pairs)
    for p in pairs:
        assert p["source"] == "judge" and p["annotator"].startswith("judge:judge-model")
        assert project.spec.align.judge.rubric in p["meta"]["judge_prompt"]
        assert p["meta"]["verdict"].startswith("Response")
    assert _Judge.seen[-1][0] == "/v1/chat/completions" and _Judge.seen[-1][1] == "judge-model"
    # Both orders were shown (position bias does not become a preference).
    assert {p["meta"]["order_swapped"] for p in pairs} == {True, False} or len(pairs) < 2


def test_unreachable_endpoint_is_a_clear_error():
    from odyssey.errors import Unavailable

    judge = EndpointJudge("http://127.0.0.1:9/v1", "m")
    with pytest.raises(Unavailable, match="judge endpoint failed"):
        judge(judge_prompt("be nice", "q", "a", "b"))


def test_local_model_judge_answers_a_or_b():
    from odyssey.align.judge import LocalJudge
    from odyssey.models import load

    judge = LocalJudge(load("tiny:llama"), "tiny:llama")
    verdicts = {judge(judge_prompt("be kind", "q", a, b)) for a, b in [("x", "y"), ("long answer", "no")]}
    assert verdicts <= {"A", "B"} and judge.name == "judge:tiny:llama"
