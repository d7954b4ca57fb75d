"""The README's examples, checked against the code (as `cog --check` keeps simonw/llm's docs true).

- Every shell line in a fenced ```bash/```sh/```console block is run, in README order, in one temporary
  folder, by the real `odyssey` CLI, except the lines in NOT_RUN (each with its reason). A line that is a
  usage pattern rather than a command (``[--json]``, ``clm|mlm|span``, ``NAME``) must be in RUN_AS, which
  says what the test runs for it. A new README line is therefore either run or refused here, and an entry
  of either table that the README no longer has fails as stale.
- ```python blocks run too; ```yaml blocks are validated in a project (`odyssey validate`).
- Every flag the README shows for an `odyssey` command (in a block, its comment, or inline code) is in
  that command's `--help`.

The project is the one the README makes (`odyssey init my-summarizer --task summarization`), on the tiny
random Llama instead of the packaged SmolLM2 (TINY) and at the quick profile's sizes (test_sizes), so each
stage does the least that still exercises it.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHELL_LANGS = {"bash", "sh", "shell", "console"}

# The models the README names, and the tiny random model of the same family the test runs instead.
TINY = {"packaged:smollm2-135m-instruct": "tiny:llama", "packaged:gemma3-270m": "tiny:llama"}

# README lines the test does not run, and why. The flags they show are still checked against --help.
NOT_RUN = {
    "bash scripts/demo.sh": "the install itself (a fresh .venv) and then `odyssey demo` for minutes",
    "bash scripts/test.sh": "the install and the whole test suite, which includes this test",
    "torchrun --nproc_per_node 2 -m odyssey.cli finetune": "two DDP processes (tests/training cover DDP)",
    "odyssey optimize tools": "builds llama.cpp from source for minutes; the suite uses the setup's build",
    "odyssey optimize quantize --to gguf:q4_k_m": "llama.cpp's converter does not know tiny:llama's tokenizer"
    " (BPE pre-tokenizer not recognized); SmolLM2's it knows",
    "pip install 'llm-odyssey[tracking]'": "installs packages; the test environment has them",
    "pip install 'llm-odyssey[tune]'": "installs packages; the test environment has them",
    "tensorboard --logdir .odyssey/tensorboard": "TensorBoard's own server, which runs until stopped",
    "odyssey track export [--uri URI] [--experiment NAME]": "needs an MLflow server (MLflow 3 refuses a ./mlruns"
    " store; sqlite:// costs ~9 s of schema migrations); tests/tracking/test_tracking.py runs it against a real one",
}

# README lines that are usage patterns (or name something the test makes): what the test runs instead.
RUN_AS = {
    'odyssey plan --model packaged:smollm2-135m-instruct --method lora --hardware "cpu:2,ram:24gb" [--json]': (
        "[--json] is optional: run with it, so the object is checked",
        ['odyssey plan --model packaged:smollm2-135m-instruct --method lora --hardware "cpu:2,ram:24gb" --json'],
    ),
    "odyssey pretrain --objective clm|mlm|span --size tiny [--resume] [--init-from REF]": (
        "one of the objectives, from scratch",
        ["odyssey pretrain --objective clm --size tiny"],
    ),
    "odyssey align dpo [--reference-free]": ("the optional flag left out", ["odyssey align dpo"]),
    "odyssey align kto [--data feedback]": ("the optional flag left out", ["odyssey align kto"]),
    "odyssey align compare CANDIDATE [--limit 100]": (
        "CANDIDATE: the DPO candidate just made",
        ["odyssey align compare tiny-llama:lora+dpo --limit 2"],
    ),
    "odyssey align compare [--limit 100]": ("on two test rows", ["odyssey align compare --limit 2"]),
    "odyssey keys list / odyssey keys revoke alice": (
        "two commands on one line",
        ["odyssey keys list", "odyssey keys revoke alice"],
    ),
    "odyssey export NAME --format hf --adapter --to out/adapter": (
        "NAME: the LoRA candidate",
        ["odyssey export tiny-llama:lora --format hf --adapter --to out/adapter"],
    ),
    "odyssey export NAME --format gguf --to out/gguf": (
        "NAME: the LoRA candidate",
        ["odyssey export tiny-llama:lora --format gguf --to out/gguf"],
    ),
    "odyssey export NAME --format ollama --to out/ollama": (
        "NAME: the LoRA candidate",
        ["odyssey export tiny-llama:lora --format ollama --to out/ollama"],
    ),
    "odyssey optimize distill --student-layers 15": (
        "15 is half of SmolLM2's 30 layers; tiny:llama has 2",
        ["odyssey optimize distill --student-layers 1"],
    ),
    "odyssey tune --trials 8 [--max-steps N] [--limit N] [--method lora] [--json]": (
        "two trials of two steps",
        ["odyssey tune --trials 2 --max-steps 2 --limit 2 --method lora --json"],
    ),
}

# Files a README line assumes the user has (their own documents, corpus, preference pairs).
_REFUND = "The refund window is open for thirty days, and the money goes back to the card that paid for the order."
INPUTS = {
    # odyssey data curate: a document, its exact copy, a near copy (one word changed), one with PII.
    "corpus/a.txt": _REFUND + "\n",
    "corpus/b.txt": _REFUND + "\n",
    "corpus/c.txt": _REFUND.replace("the order", "your order") + "\n",
    "corpus/d.txt": "Write to alice@example.com or call 555-123-4567 to say that the parcel came damaged, and we"
    " will send a new one with the next van.\n",
    "docs/refunds.md": "# Refunds\n\nThe refund window is 30 days from delivery. Refunds go to the original card.\n",
    "docs/shipping.md": "# Shipping\n\nOrders ship within two working days; delivery takes three to five days.\n",
    "prefs.jsonl": "".join(
        json.dumps({"prompt": f"#Person1#: Where is my order {i}?", "chosen": f"Order {i} is late.", "rejected": "ok"})
        + "\n"
        for i in range(4)
    ),
}

# What a python block's names must hold afterwards, for the block that starts with the key.
PYTHON_CHECKS = {
    "from odyssey import Project": "assert type(best).__name__ == 'PromptResult' and best.variants and best.gates\n"
    "assert result.model_ref == 'tiny:llama' and result.split == 'test' and 'rougeL' in result.metrics\n"
    "assert board.best and board.candidates and board.primary_metric == 'rougeL'\n",
}

# What a command's output must say (beyond exit code 0 and no traceback), by the end of the command run.
EXPECT = {
    "odyssey validate": "ok",
    "odyssey models": "tiny:llama",
    "odyssey status": "tiny-llama:prompt",
    "odyssey keys create --name alice": "ody-",
    'odyssey rag search "refund window" -c handbook': "docs/refunds.md",
    'odyssey rag ask "What is the refund window?" -c handbook': "docs/refunds.md",
    "odyssey keys list": "alice",
    "odyssey keys revoke alice": "revoked 1 key(s)",
}


def _curated(project: Path) -> None:
    """Exact and near duplicates dropped, PII scrubbed, the report written (the README's comment)."""
    report = json.loads((project / "clean" / "report.json").read_text())
    assert (report["n_input"], report["n_kept"]) == (4, 2), report
    assert report["dropped"]["exact_duplicate"] == report["dropped"]["near_duplicate"] == 1, report["dropped"]
    kept = (project / "clean" / "clean.jsonl").read_text()
    assert "<EMAIL>" in kept and "<PHONE>" in kept and "alice@" not in kept


def _files(*names: str):
    def exist(project: Path) -> None:
        missing = [n for n in names if not (project / n).exists()]
        assert not missing, f"not written: {missing}"

    return exist


# What a command must leave in the project folder.
WRITES = {
    "odyssey run": _files(".odyssey/pipeline/report.md"),
    "odyssey data curate corpus/ --out clean/": _curated,
    "odyssey rag ingest docs/ --collection handbook": _files(".odyssey/collections/handbook"),
    "odyssey export best --format hf --to out/hf": _files("out/hf/model.safetensors", "out/hf/README.md"),
    "odyssey export tiny-llama:lora --format hf --adapter --to out/adapter": _files("out/adapter/adapter_config.json"),
    "odyssey export tiny-llama:lora --format gguf --to out/gguf": _files("out/gguf/model-f32.gguf"),
    "odyssey export tiny-llama:lora --format ollama --to out/ollama": _files(
        "out/ollama/Modelfile", "out/ollama/model-f32.gguf"
    ),
}


# ---- reading the README ---------------------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    line: int  # README line of the first line inside the fence
    body: list[str]


@dataclass
class Command:
    line: int
    text: str  # the command, continuation lines joined, comments dropped
    comment: str = ""  # its comment and the comment-only lines under it


def fenced_blocks(text: str) -> list[Block]:
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current = Block(line[3:].strip().lower(), number + 1, [])
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.body.append(line)
    assert current is None, f"README.md:{current.line - 1}: a fenced block is never closed"
    return blocks


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's code and its comment: the first # outside quotes that starts a word."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def shell_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    pending: Command | None = None
    for offset, raw in enumerate(block.body):
        code, comment = split_comment(raw)
        if pending is not None:  # a continuation of the line above (it ended in a backslash)
            pending.text += " " + code.strip().removesuffix("\\").strip()
            pending.comment += " " + comment
            if not code.endswith("\\"):
                pending = None
            continue
        if not code.strip():
            if comment and commands:
                commands[-1].comment += " " + comment
            continue
        command = Command(block.line + offset, code.strip().removesuffix("\\").strip(), comment)
        commands.append(command)
        if code.endswith("\\"):
            pending = command
    return commands


def readme_commands(text: str | None = None) -> list[Command]:
    text = README.read_text() if text is None else text
    return [c for b in fenced_blocks(text) if b.lang in SHELL_LANGS for c in shell_commands(b)]


def _unquoted(text: str) -> str:
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)


def is_pattern(text: str) -> bool:
    """Usage syntax rather than a command: [optional], a|b, PLACEHOLDER, $VARIABLE, `a / b`."""
    bare = _unquoted(text)
    return bool(re.search(r"[\[\]|$<>]| / |(?<![\w:/.-])[A-Z][A-Z0-9_]*(?![\w:/.-])", bare))


def program(text: str) -> str:
    words = shlex.split(text)
    while words[:1] == ["cd"] and "&&" in words:
        words = words[words.index("&&") + 1 :]
    return words[0] if words else ""


def plan(commands: list[Command]) -> tuple[list[tuple[Command, list[str]]], list[str]]:
    """(each README command with what the test runs for it, problems): a pattern not in RUN_AS, a program
    other than odyssey or curl that is not in NOT_RUN."""
    steps, problems = [], []
    for command in commands:
        if command.text in NOT_RUN:
            continue
        if command.text in RUN_AS:
            steps.append((command, RUN_AS[command.text][1]))
        elif is_pattern(command.text):
            problems.append(
                f"README.md:{command.line}: `{command.text}` is a usage pattern, not a command: say what the"
                " test runs for it in RUN_AS, or why it cannot run in NOT_RUN (tests/test_readme.py)"
            )
        elif program(command.text) not in {"odyssey", "curl"}:
            problems.append(
                f"README.md:{command.line}: `{command.text}` runs {program(command.text)!r}: the test runs odyssey"
                " and curl lines; list it in NOT_RUN with the reason (tests/test_readme.py)"
            )
        else:
            steps.append((command, [command.text]))
    return steps, problems


def stale_entries(commands: list[Command]) -> list[str]:
    shown = {c.text for c in commands}
    return [
        f"tests/test_readme.py {table}: `{text}` is no longer in README.md: remove or update the entry"
        for table, entries in (("NOT_RUN", NOT_RUN), ("RUN_AS", RUN_AS))
        for text in entries
        if text not in shown
    ]


# ---- the checks that need no model (default suite) -----------------------------------------------------


def test_readme_parsing_joins_continuations_and_drops_comments():
    text = "x\n```bash\nodyssey a --b 1   # says '#1'\n   # more words\ncurl -d '{\"k\": \"#v#\"}' \\\n  -H x\n```\n"
    commands = readme_commands(text)
    assert [(c.line, c.text) for c in commands] == [(3, "odyssey a --b 1"), (5, 'curl -d \'{"k": "#v#"}\' -H x')]
    assert commands[0].comment == "says '#1' more words"
    assert is_pattern("odyssey x [--json]") and is_pattern("odyssey export NAME --to out") and is_pattern("a / b")
    assert not is_pattern('odyssey reason "A box ..." --strategy pal') and not is_pattern("odyssey plan --hardware x")


def test_every_readme_command_is_run_or_listed_with_a_reason():
    commands = readme_commands()
    assert len(commands) > 40, "the README's shell blocks were not found"
    steps, problems = plan(commands)
    assert not problems + stale_entries(commands), "\n".join(problems + stale_entries(commands))
    assert all(reason.strip() for reason in NOT_RUN.values())
    # The tables must not grow into a way of not running things: every RUN_AS line still runs an odyssey command.
    assert all(cmds and all(c.startswith("odyssey ") for c in cmds) for _, cmds in RUN_AS.values())
    assert len(steps) >= 40
    python = ["\n".join(b.body) for b in fenced_blocks(README.read_text()) if b.lang == "python"]
    assert all(any(code.startswith(k) for code in python) for k in PYTHON_CHECKS), "a stale PYTHON_CHECKS entry"
    # EXPECT and WRITES name commands as the test runs them: each must still be one.
    run = {text for _, cmds in steps for text in cmds}
    stale = [k for k in [*EXPECT, *WRITES] if not any(text == k or text.endswith(" && " + k) for text in run)]
    assert not stale, f"EXPECT/WRITES entries for commands the test no longer runs: {stale}"


def _cli_tree():
    import typer.main

    from odyssey.cli import app

    return typer.main.get_command(app)


def _help(path: tuple[str, ...]) -> str:
    from typer.testing import CliRunner

    from odyssey.cli import app

    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (path, result.output)
    return result.output


def odyssey_invocations(text: str) -> list[tuple[str, list[str]]]:
    """(where, the words after `odyssey`) for each odyssey command in a shell block or inline code; a
    line's comment counts as part of its (first) command: it often names more flags."""
    found = []
    for command in readme_commands(text):
        words = [w.strip("[]") for w in _unquoted(command.text).split()]
        starts = [i + 1 for i, w in enumerate(words) if w == "odyssey" or (w == "odyssey.cli" and words[i - 1] == "-m")]
        for n, start in enumerate(starts):  # "odyssey keys list / odyssey keys revoke alice" is two
            end = starts[n + 1] - 1 if n + 1 < len(starts) else len(words)
            more = re.findall(r"(?:^|[\s(,;`])(--[a-z][a-z0-9-]+)", command.comment) if n == 0 else []
            found.append((f"README.md:{command.line}", [w for w in words[start:end] if w != "/"] + more))
    for number, line in enumerate(text.splitlines(), 1):
        for span in re.findall(r"`(odyssey [^`]+)`", line):
            found.append((f"README.md:{number}", _unquoted(span).split()[1:]))
    return found


def parse_invocation(words: list[str], tree) -> tuple[list[tuple[tuple[str, ...], str]], list[str]]:
    """Each flag with the (sub)command it belongs to, and the words that should name a subcommand but do
    not (`odyssey align kot`). An option's value is skipped; `<command>` is a placeholder."""
    path: tuple[str, ...] = ()
    node, flags, unknown, value_next = tree, [], [], False
    for word in words:
        commands = getattr(node, "commands", {})
        if value_next:
            value_next = False
        elif re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word):
            name = word.split("=", 1)[0]
            flags.append((path, name))
            option = next((p for p in node.params if name in p.opts + p.secondary_opts), None)
            value_next = "=" not in word and option is not None and not option.is_flag and not option.count
        elif word in commands:
            node, path = commands[word], (*path, word)
        elif commands and not word.startswith("<") and not node.invoke_without_command:
            unknown.append(
                f"`odyssey {' '.join((*path, word))}`: {word!r} is not a subcommand of `odyssey {' '.join(path)}`"
            )
    return flags, unknown


def test_every_command_and_flag_the_readme_shows_is_in_the_cli():
    """Each `odyssey <subcommand> --flag` in the README: the subcommand exists and --flag is in its --help."""
    tree = _cli_tree()
    helps: dict[tuple[str, ...], str] = {}
    missing = []
    for where, words in odyssey_invocations(README.read_text()):
        flags, unknown = parse_invocation(words, tree)
        missing += [f"{where}: {u}" for u in unknown]
        for at, flag in flags:
            helps.setdefault(at, _help(at))
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[at]):
                missing.append(f"{where}: `odyssey {' '.join(at)} {flag}`: not in `odyssey {' '.join(at)} --help`")
    assert len(helps) > 25
    assert not missing, "\n".join(missing)


def test_every_flag_named_alone_in_the_readme_belongs_to_some_command():
    """Inline code like `--port 0` or `--gguf-fallback q4_0`: some command has that flag."""
    tree = _cli_tree()

    def walk(node, path=()):
        yield path
        for name, child in getattr(node, "commands", {}).items():
            yield from walk(child, (*path, name))

    every_help = "\n".join(_help(path) for path in walk(tree))
    alone = set(re.findall(r"`(--[a-z][a-z0-9-]+)[^`]*`", README.read_text()))
    assert len(alone) > 5
    missing = sorted(f for f in alone if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", every_help))
    assert not missing, f"README.md names flags no command has: {missing}"


def _yaml_blocks() -> list[Block]:
    return [b for b in fenced_blocks(README.read_text()) if b.lang in {"yaml", "yml"}]


def test_readme_yaml_examples_are_valid_specs(tmp_path):
    """The project file example is a whole odyssey.yaml; the other blocks are sections added to one."""
    from odyssey.project import check_project
    from odyssey.scaffold import init_project

    blocks = _yaml_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        root = init_project(tmp_path / f"line{block.line}", "summarization")
        snippet = "\n".join(block.body) + "\n"
        spec = root / "odyssey.yaml"
        whole = "name" in (yaml.safe_load(snippet) or {})
        spec.write_text(snippet if whole else spec.read_text() + "\n" + snippet)
        _, report = check_project(spec)  # what `odyssey validate` checks: data and model references too
        assert report.ok, f"README.md:{block.line}: the ```yaml block is not a valid spec:\n" + "\n".join(
            str(p) for p in report.problems
        )


# ---- running the commands (slow) ------------------------------------------------------------------------


def small_sizes() -> dict:
    """The quick profile (each stage does the least that still exercises it), with shorter answers: a random
    tiny model always talks until max_new_tokens."""
    from odyssey.pipeline.names import PROFILES
    from odyssey.pipeline.plan import deep_merge

    return deep_merge(
        PROFILES["quick"],
        {
            "prompt": {"shots": [0, 1], "generation": {"max_new_tokens": 8}},
            "evaluate": {"generation": {"max_new_tokens": 8}},
            "select": {"limit": 2, "pretrain": {"steps": 4, "eval_every": 2, "batch_size": 4}},
            "augment": {"max_new_tokens": 16},
            "align": {"ppo": {"num_generations": 2}},
        },
    )


def made_by_init(project: Path) -> None:
    """The project `odyssey init` wrote, on the tiny model and at small_sizes(), with the user's INPUTS."""
    from odyssey.pipeline.plan import deep_merge

    spec_file = project / "odyssey.yaml"
    text = spec_file.read_text()
    for packaged, tiny in TINY.items():
        text = text.replace(packaged, tiny)
    spec_file.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(text), small_sizes()), sort_keys=False))
    for name, content in INPUTS.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(content)


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    seconds: float = 0.0


def _readline(fd: int, buffer: bytearray, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError("the fork server exited")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


class ForkServer:
    """tests/forkserver.py: each command a fresh forked process with torch already imported."""

    def __init__(self, env: dict):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.forkserver"], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.buffer = bytearray()
        assert _readline(self.proc.stdout.fileno(), self.buffer, 300) == b'{"ready": true}'

    def run(self, request: dict, timeout: float) -> int:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        pid = json.loads(_readline(fd, self.buffer, 60))["pid"]
        reply = _readline(fd, self.buffer, timeout)
        if reply is None:
            os.killpg(pid, signal.SIGKILL)
            reply = _readline(fd, self.buffer, 60)
        return json.loads(reply)["rc"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@dataclass
class Session:
    """README lines run as one shell session would: one working folder (`cd` changes it), commands in order.
    ODYSSEY_README_FORK=0 runs each command as its own `python -m odyssey.cli` instead of a fork."""

    root: Path
    timeout: float = 300
    cwd: Path = None
    key: str | None = None
    server: tuple[subprocess.Popen, int] | None = None
    times: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self):
        self.cwd = self.root
        self.logs = self.root / "readme-logs"
        self.logs.mkdir()
        self.env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        self.forks = ForkServer(self.env) if os.environ.get("ODYSSEY_README_FORK", "1") != "0" else None

    def _process(self, request: dict) -> Result:
        n = len(self.times)
        out, err = self.logs / f"{n}.out", self.logs / f"{n}.err"
        started = time.monotonic()
        if self.forks is not None:
            rc = self.forks.run({**request, "stdout": str(out), "stderr": str(err)}, self.timeout)
        else:
            argv = ["-c", request["python"]] if "python" in request else ["-m", "odyssey.cli", *request["argv"]]
            with open(out, "wb") as o, open(err, "wb") as e:
                rc = subprocess.run(
                    [sys.executable, *argv], cwd=request["cwd"], env=self.env, stdout=o, stderr=e, timeout=self.timeout
                ).returncode
        return Result(rc, out.read_text(), err.read_text(), time.monotonic() - started)

    def python(self, code: str, where: str) -> Result:
        for packaged, tiny in TINY.items():
            code = code.replace(packaged, tiny)
        result = self._process({"python": code, "filename": where, "cwd": str(self.root)})
        self.times.append((result.seconds, f"{where} (python)"))
        return result

    def run(self, text: str) -> Result:
        for packaged, tiny in TINY.items():
            text = text.replace(packaged, tiny)
        words = shlex.split(text)
        while words[:1] == ["cd"] and words[2:3] == ["&&"]:
            self.cwd = (self.cwd / words[1]).resolve()
            words = words[3:]
        if words[:2] == ["odyssey", "serve"]:
            result = self.serve(words[2:])
        elif words[0] == "odyssey":
            result = self._process({"argv": words[1:], "cwd": str(self.cwd)})
            if words[1] == "init" and result.rc == 0:
                made_by_init(self.cwd / words[2])
        elif words[0] == "curl":
            result = self.curl(text[text.index("curl") :])
        else:
            raise AssertionError(f"the test does not run {words[0]!r} lines: {text}")
        self.times.append((result.seconds, text))
        return result

    def serve(self, args: list[str]) -> Result:
        """`odyssey serve` blocks: started in the background on a free port, ready when /health answers."""
        import httpx

        from odyssey.deploy.backends import free_port

        port = free_port()
        if "--port" in args:
            args[args.index("--port") + 1] = str(port)
        log = self.logs / "serve.log"
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "odyssey.cli", "serve", *args],
            cwd=self.cwd,
            env=self.env,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.server = (proc, port)
        while time.monotonic() - started < self.timeout and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return Result(0, log.read_text(), "", time.monotonic() - started)
            except httpx.HTTPError:
                time.sleep(0.3)
        return Result(proc.poll() or 1, log.read_text(), "odyssey serve did not answer /health", 0.0)

    def curl(self, text: str) -> Result:
        """As written, with $KEY the key `odyssey keys create` printed and the port the server got."""
        assert self.server and self.key, "the README's curl line needs `odyssey keys create` and `odyssey serve`"
        text = text.replace("localhost:8000", f"localhost:{self.server[1]}")
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", text], cwd=self.cwd, env={**self.env, "KEY": self.key}, capture_output=True, text=True
        )
        return Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def stop_server(self) -> int | None:
        if self.server is None:
            return None
        proc, _ = self.server
        self.server = None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()

    def close(self) -> None:
        self.stop_server()
        if self.forks is not None:
            self.forks.close()


def check(command: str, result: Result, session: Session) -> None:
    where = f"`{command}`"
    both = result.stdout + result.stderr
    assert result.rc == 0, f"{where} exited {result.rc}:\n{both[-3000:]}"
    assert "Traceback" not in both, f"{where}:\n{both[-3000:]}"
    words = command.split()
    if "--json" in words:
        assert isinstance(json.loads(result.stdout), dict), f"{where}: --json promises an object"
    for shown, expected in EXPECT.items():
        if command.endswith(shown):
            assert expected in result.stdout, f"{where} should print {expected!r}:\n{result.stdout[-2000:]}"
    if command in WRITES:
        WRITES[command](session.cwd)
    if words[:3] == ["odyssey", "keys", "create"]:
        session.key = re.findall(r"ody-[\w-]{43}", result.stdout)[-1]
    if words[0] == "curl":
        events = [line for line in result.stdout.splitlines() if line.startswith("data:")]
        assert len(events) > 2 and events[-1] == "data: [DONE]", f"{where}:\n{result.stdout[-2000:]}"


@pytest.fixture
def fixed_probe(_odyssey_home):
    """`odyssey plan` and `odyssey run` ask the planner's machine probe, measured once per ODYSSEY_HOME (most of
    a minute); tests/select/test_planner.py tests the probe, so this home gets a fixed one."""
    from odyssey.select import planner
    from tests.conftest import FIXED_PROBE

    key = planner._probe_key("cpu")
    if key not in planner._load_cache():
        planner._save_cache(key, FIXED_PROBE)


@pytest.mark.slow
@pytest.mark.readme
def test_readme_commands_run_as_written(tmp_path, fixed_probe):
    """Every failing line is reported (a later line may fail only because an earlier one did)."""
    steps, problems = plan(readme_commands())
    assert not problems, "\n".join(problems)
    todo = {(command.line, command.text): runs for command, runs in steps}
    session = Session(tmp_path)
    failures = []

    def attempt(where: str, text: str, run, *args) -> None:
        try:
            check(text, run(*args), session)
        except AssertionError as exc:
            failures.append(f"{where}: {exc}")

    try:
        for block in fenced_blocks(README.read_text()):
            if block.lang == "python":
                code, where = "\n".join(block.body), f"README.md:{block.line}"
                code += "\n" + "".join(v for k, v in PYTHON_CHECKS.items() if code.startswith(k))
                attempt(where, "python block", session.python, code, where)
            for command in shell_commands(block) if block.lang in SHELL_LANGS else []:
                for text in todo.get((command.line, command.text), []):
                    attempt(f"README.md:{command.line}", text, session.run, text)
            if session.server is not None and session.stop_server() != 0:
                failures.append(f"README.md:{block.line}: odyssey serve should exit 0 on SIGTERM")
    finally:
        session.close()
        print("\n".join(f"{s:7.1f} s  {text}" for s, text in sorted(session.times, reverse=True)))
    assert not failures, "\n\n".join(failures)
