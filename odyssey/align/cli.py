"""CLI for the align stage: ``odyssey align prefs | queue | reward | ppo | dpo | kto | orpo | simpo | compare``.
Imports only typer and the standard library at module level (``odyssey --help`` must stay fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from odyssey.cli_options import JsonOpt, ProjectOpt
from odyssey.cli_support import console as _console, emit_json as _emit, load_project as _load

StartOpt = Annotated[Optional[str], typer.Option("--start", help="candidate to align (default: best fine-tuned)")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint of the same run")]
NoEvalOpt = Annotated[bool, typer.Option("--no-eval", help="skip the aligned-vs-parent comparison")]

SOURCE_KINDS = ("file", "hf", "reference", "outputs", "metric", "judge", "feedback")


def parse_source(text: str) -> dict:
    """'reference', 'metric', 'judge', 'feedback', 'file:prefs.jsonl', 'hf:Anthropic/hh-rlhf'."""
    from odyssey.errors import OdysseyError

    kind, _, arg = text.partition(":")
    if kind not in SOURCE_KINDS:
        raise OdysseyError(
            f"--source {text!r}: unknown kind {kind!r}",
            hint=f"use one of {', '.join(SOURCE_KINDS)}; e.g. --source file:prefs.jsonl",
        )
    if kind in {"file", "hf"} and not arg:
        raise OdysseyError(
            f"--source {kind} needs a {'path' if kind == 'file' else 'dataset id'}",
            hint=f"e.g. --source {kind}:{'prefs.jsonl' if kind == 'file' else 'Anthropic/hh-rlhf'}",
        )
    return {"kind": kind, **({"path": arg} if kind == "file" else {"id": arg} if kind == "hf" else {})}


def _print_result(result, as_json: bool):
    if as_json:
        _emit(result.as_dict())
        return
    from odyssey.render import align_result_tables, print_tables

    console = _console()
    print_tables(console, *align_result_tables(result))
    console.print(f"candidate [bold]{result.candidate}[/] (parent {result.parent}) saved at {result.model_path}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def prefs(
    source: Annotated[
        Optional[list[str]],
        typer.Option(
            "--source",
            help="reference | outputs | metric | judge | feedback | file:PATH | hf:ID (repeat; "
            "default: align.preferences)",
        ),
    ] = None,
    pairs: Annotated[Optional[int], typer.Option(help="prompts to sample pairs for (model sources)")] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Collect preference pairs {prompt, chosen, rejected, source, annotator} into the store."""
    from odyssey.align.preferences import build_preferences

    proj = _load(project)
    sources = [parse_source(s) for s in source] if source else None
    pset = build_preferences(proj, sources=sources, n_pairs=pairs)
    payload = {
        "preference_set": pset.id,
        "sha256": pset.sha256,
        "pairs": len(pset.pairs),
        "sources": pset.sources,
        "path": str(pset.path),
        "notes": pset.notes,
    }
    if as_json:
        _emit(payload)
        return
    console = _console()
    console.print(
        f"{len(pset.pairs)} pairs ({', '.join(f'{k}: {v}' for k, v in pset.sources.items())}), "
        f"set {pset.id}, sha256 {pset.sha256[:12]}, written to {pset.path}"
    )
    for note in pset.notes:
        console.print(f"[yellow]note:[/] {note}")


def queue(
    pairs: Annotated[int, typer.Option(help="prompts to sample two answers for")] = 50,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Sample answer pairs from the current candidate for people to judge in `odyssey serve`'s compare page."""
    from odyssey.align.preferences import queue_for_labelling

    n = queue_for_labelling(_load(project), pairs)
    if as_json:
        _emit({"queued": n})
    else:
        _console().print(
            f"queued {n} pairs; people choose in the compare page of `odyssey serve`, then "
            "`odyssey align prefs --source feedback` collects their choices"
        )


def reward(
    preferences: Annotated[
        Optional[str], typer.Option(help="preference set id, name or sha256 prefix (default: the latest)")
    ] = None,
    model: Annotated[Optional[str], typer.Option(help="backbone (default: the candidate's base)")] = None,
    resume: ResumeOpt = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Train a reward model (Bradley-Terry) on preference pairs; pairwise accuracy and calibration."""
    from odyssey.align.reward import train_reward_model

    ref = int(preferences) if preferences and preferences.isdigit() else preferences
    result = train_reward_model(_load(project), preference_set=ref, backbone=model, resume=resume)
    if as_json:
        _emit(result.as_dict())
        return
    console = _console()
    m = result.metrics
    console.print(
        f"reward model [bold]{result.name}[/] on {result.base_ref}: held-out pairwise accuracy "
        f"{m['reward_accuracy']:.3f} ({int(m['held_out_pairs'])} pairs), "
        f"train {m['reward_accuracy_train']:.3f}, "
        f"ECE {m['reward_ece']:.3f}\ncalibration plot: {result.plot}"
    )


def ppo_cmd(
    reward_: Annotated[
        str,
        typer.Option(
            "--reward", help="model (the reward model) | toxicity (detox: 1 - offensiveness on the provocation prompts)"
        ),
    ] = "model",
    algo: Annotated[str, typer.Option(help="ppo | rloo | grpo (TRL's online trainers)")] = "ppo",
    steps: Annotated[Optional[int], typer.Option(help="PPO steps (default: align.ppo.steps)")] = None,
    reward_model: Annotated[Optional[str], typer.Option(help="reward model name (default: the latest)")] = None,
    start: StartOpt = None,
    resume: ResumeOpt = False,
    no_eval: NoEvalOpt = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """RLHF: policy (LoRA) vs frozen reference, reward, per-token KL penalty, clipped PPO updates."""
    from odyssey.errors import OdysseyError

    if reward_ not in {"model", "toxicity"}:
        raise OdysseyError(f"--reward {reward_!r} is not known", hint="use --reward model or --reward toxicity")
    proj = _load(project)
    if algo == "ppo":
        from odyssey.align.ppo import train_ppo

        result = train_ppo(
            proj,
            reward=reward_,
            reward_model=reward_model,
            start=start,
            steps=steps,
            resume=resume,
            evaluate=not no_eval,
        )
    elif algo in {"rloo", "grpo"}:
        from odyssey.align.dpo import trl_online

        result = trl_online(
            proj, algo, reward=reward_, reward_model=reward_model, start=start, steps=steps, evaluate=not no_eval
        )
    else:
        raise OdysseyError(f"--algo {algo!r} is not known", hint="use ppo, rloo or grpo")
    _print_result(result, as_json)


PreferencesOpt = Annotated[Optional[str], typer.Option(help="preference set (default: the latest)")]


def dpo_cmd(
    beta: Annotated[Optional[float], typer.Option(help="DPO beta (default: align.dpo.beta)")] = None,
    reference_free: Annotated[
        Optional[bool], typer.Option("--reference-free/--with-reference", help="drop the reference model")
    ] = None,
    preferences: PreferencesOpt = None,
    start: StartOpt = None,
    resume: ResumeOpt = False,
    no_eval: NoEvalOpt = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Direct preference optimization on the stored preference pairs (align.dpo)."""
    from odyssey.align.dpo import train_dpo

    result = train_dpo(
        _load(project),
        preference_set=_set_ref(preferences),
        start=start,
        resume=resume,
        evaluate=not no_eval,
        beta=beta,
        reference_free=reference_free,
    )
    _print_result(result, as_json)


def _set_ref(preferences: str | None):
    return int(preferences) if preferences and preferences.isdigit() else preferences


# Module level: the CLI's annotations are strings (postponed), resolved in this module's namespace.
MethodBetaOpt = Annotated[Optional[float], typer.Option(help="the method's beta (default: align.<method>.beta)")]


def kto_cmd(
    beta: Annotated[Optional[float], typer.Option(help="KTO beta (default: align.kto.beta)")] = None,
    data: Annotated[
        Optional[str],
        typer.Option(
            help="pairs (split in two) | feedback (thumbs from odyssey serve) | both (default: align.kto.data)"
        ),
    ] = None,
    preferences: PreferencesOpt = None,
    start: StartOpt = None,
    resume: ResumeOpt = False,
    no_eval: NoEvalOpt = False,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """KTO: desirable and undesirable answers one at a time, against the reference (align.kto)."""
    from odyssey.align.dpo import train_kto

    result = train_kto(
        _load(project),
        preference_set=_set_ref(preferences),
        start=start,
        resume=resume,
        evaluate=not no_eval,
        beta=beta,
        data=data,
    )
    _print_result(result, as_json)


def _reference_free_cmd(method: str, what: str):
    """``odyssey align orpo|simpo``: the same options, the method's own spec section."""

    def command(
        beta: MethodBetaOpt = None,
        preferences: PreferencesOpt = None,
        start: StartOpt = None,
        resume: ResumeOpt = False,
        no_eval: NoEvalOpt = False,
        project: ProjectOpt = Path("."),
        as_json: JsonOpt = False,
    ):
        from odyssey.align.dpo import train_preference

        result = train_preference(
            _load(project),
            method,
            preference_set=_set_ref(preferences),
            start=start,
            resume=resume,
            evaluate=not no_eval,
            beta=beta,
        )
        _print_result(result, as_json)

    command.__doc__ = f"{what} on the stored preference pairs, no reference model (align.{method})."
    return command


def compare(
    candidate: Annotated[
        Optional[str], typer.Argument(help="an aligned candidate (none: rank every method against DPO)")
    ] = None,
    parent: Annotated[Optional[str], typer.Option(help="what to compare with (default: its parent)")] = None,
    detox: Annotated[bool, typer.Option(help="also offensiveness on the held-out provocation prompts")] = False,
    limit: Annotated[
        Optional[int], typer.Option(min=1, help="test examples compared (default: align.eval_limit)")
    ] = None,
    project: ProjectOpt = Path("."),
    as_json: JsonOpt = False,
):
    """Aligned vs parent: reward-model win-rate, task metrics and their change, KL, offensiveness.
    Without a candidate: every method's newest candidate ranked against DPO's on the same test rows."""
    from odyssey.align.evaluation import detox_report, evaluate_aligned
    from odyssey.errors import OdysseyError

    proj = _load(project)
    if candidate is None:
        _rank(proj, parent, limit, as_json)
        return
    row = proj.store.candidate(candidate)
    if row is None:
        raise OdysseyError(f"no candidate named {candidate!r}", hint="see `odyssey status`")
    if parent is None:
        par = proj.store.candidate(row["parent_id"]) if row["parent_id"] else None
        if par is None:
            raise OdysseyError(f"{candidate} has no parent candidate", hint="name one with --parent")
        parent = par["name"]
    if detox:
        report = detox_report(proj, candidate, parent)
    else:
        report = evaluate_aligned(proj, candidate, parent, limit=limit)
    if as_json:
        _emit(report)
        return
    from odyssey.render import metrics_table

    console = _console()
    console.print(metrics_table(report["metrics"], f"{candidate} vs {parent}", digits=3))
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def _rank(proj, parent: str | None, limit: int | None, as_json: bool) -> None:
    from odyssey.align.evaluation import rank_methods
    from odyssey.render import plain_table

    report = rank_methods(proj, parent=parent, limit=limit)
    if as_json:
        _emit(report)
        return
    columns = ["rank", "method", "candidate", "win vs DPO", "95% CI", "metric win vs DPO", "win vs parent", "KL"]
    rows = [
        [
            r["rank"],
            r["method"],
            r["candidate"],
            r.get("win_rate_vs_dpo"),
            "" if r.get("win_rate_vs_dpo_ci") is None else "{:.2f}-{:.2f}".format(*r["win_rate_vs_dpo_ci"]),
            r["metric_win_rate_vs_dpo"],
            r["win_rate"],
            r["kl"],
        ]
        for r in report["methods"]
    ]
    console = _console()
    title = f"methods against DPO on {report['n']} {report['split']} rows (parent {report['parent']})"
    console.print(plain_table(title, columns, rows))
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def register(app: typer.Typer) -> None:
    align = typer.Typer(
        help="Align a candidate with preferences: preference data, reward model, PPO, DPO, KTO, ORPO, SimPO, detox.",
        no_args_is_help=True,
    )
    app.add_typer(align, name="align")
    align.command("prefs")(prefs)
    align.command("queue")(queue)
    align.command("reward")(reward)
    align.command("ppo")(ppo_cmd)
    align.command("dpo")(dpo_cmd)
    align.command("kto")(kto_cmd)
    align.command("orpo")(_reference_free_cmd("orpo", "ORPO: SFT and an odds-ratio preference term in one loss"))
    align.command("simpo")(_reference_free_cmd("simpo", "SimPO: length-normalized log-probs as the reward, a margin"))
    align.command("compare")(compare)
