"""ALOE evaluation runs and their result file: the schema, its one reader, the writer, resume and
merge of a run, and the AL(k) plot.

`results/aloe/<model>.json` holds the run's settings and identity (the settings that decide what the
numbers mean, hashed into `settings_hash`), the models, provenance and the metrics recomputed from the
per-conversation records beside it. Files written by earlier versions read unchanged: every field they
hold is here, and unknown keys are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from aloe.errors import AloeError
from aloe.interaction.evaluation import (
    PERSONA_SYSTEM_PROMPT, PROMPTS, AloeEvaluation, EvalRecord, EvaluationSettings, prompt_hashes, read_eval_records,
)
from aloe.interaction.personas import PersonaPair
from aloe.jsonl import JsonlWriter, merge_jsonl, read_json, rewrite_jsonl, write_json
from aloe.logs import RedactedSettings
from aloe.lockstep import Roles
from aloe.metrics import alignment_metrics
from aloe.models import LOCAL_BACKENDS, resolve_spec
from aloe.prompts import prompt_hash
from aloe.provenance import provenance
from aloe.records import Record
from aloe.runs import RunFiles, settings_differences, settings_hash

log = logging.getLogger("eval_aloe")


class AloeResult(Record):
    """One ALOE evaluation result (`evaluation/eval_aloe.py`), as written to `<model>.json`."""

    benchmark: Literal["aloe"] = "aloe"  # the kind of result file (kept for files already written)
    name: str
    model: str
    models: dict[str, str]  # role (model, user, judge) -> spec
    settings: RedactedSettings  # every flag of the run (credentials in URLs redacted)
    identity: dict[str, Any]  # the settings that decide what the numbers mean
    settings_hash: str
    records: str  # the per-conversation records file
    plot: str
    metrics: dict[str, Any]  # aloe.metrics.alignment_metrics
    first_unparsed_reason: str | None = None
    stopped_early: int = 0
    failed: int = 0  # conversations whose requests failed after their retries (listed in `failures`; a re-run retries them)
    failures: str | None = None
    # Share of messages cut at their token cap (`identity` holds the caps): {"model", "user", "per_turn":
    # [{"turn", "replies", "model", "user"}]}; a share is null where nothing says (older records).
    truncated: dict[str, Any] = {}
    # Which personas: {"name", "hash" (= identity.personas), "profiles", "personalities", "personalities_in_file",
    # "pairs"}; null in results written before it was recorded.
    persona_set: dict[str, Any] | None = None
    provenance: dict[str, Any] = {}


def read_result(path: str | Path) -> AloeResult:
    """The one reader of result files; anything else is one AloeError naming the file."""
    data = read_json(path, "; remove it or pass --overwrite")
    if not isinstance(data, dict) or data.get("benchmark") != "aloe":
        raise AloeError(f"{path}: not an ALOE result (expected the JSON written by evaluation/eval_aloe.py); "
                        "choose another file or --output")
    try:
        return AloeResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise AloeError(f"{path}: not an ALOE result ({field}: {first['msg']})") from None


def result_metrics(records: Sequence[EvalRecord], turns: int, bootstrap_samples: int = 1000, seed: int = 0) -> dict:
    return alignment_metrics([record.scores() for record in records], turns, bootstrap_samples, seed)


def first_unparsed_reason(records: Sequence[EvalRecord]) -> str | None:
    for record in records:
        for turn in record.turns:
            if turn.judge.score is None:
                return turn.judge.reason
    return None


def truncation(records: Sequence[EvalRecord], turns: int) -> dict[str, Any]:
    """How many replies (model) and simulated user messages (user) hit their token cap, overall and per turn."""

    def share(turns_at: list, reason: Callable) -> float | None:
        known = [reason(turn) for turn in turns_at if reason(turn) is not None]
        return sum(r == "length" for r in known) / len(known) if known else None

    model, user = (lambda turn: turn.finish_reason), (lambda turn: turn.user_finish_reason)
    every = [turn for record in records for turn in record.turns]
    per_turn = []
    for k in range(1, turns + 1):
        at_k = [turn for turn in every if turn.turn == k]
        per_turn.append({"turn": k, "replies": len(at_k), "model": share(at_k, model), "user": share(at_k, user)})
    return {"model": share(every, model), "user": share(every, user), "per_turn": per_turn}


def write_result(run: RunFiles, settings: dict, identity: dict, records: Sequence[EvalRecord], models: dict,
                 failed: int = 0) -> AloeResult:
    """Metrics from the records, the result JSON and its plot, for the run `run` (`failed`: conversations
    this run could not finish, listed in its failures file)."""
    metrics = result_metrics(records, identity["turns"], settings["bootstrap"], settings["seed"])
    result = AloeResult(
        name=run.stem,
        model=identity["model"],
        models={"model": identity["model"], "user": identity["user_model"], "judge": identity["judge_model"]},
        settings=settings,
        identity=identity,
        settings_hash=settings_hash(identity),
        records=str(run.beside("records.jsonl")),
        plot=str(run.beside("png")),
        metrics=metrics,
        first_unparsed_reason=first_unparsed_reason(records),
        stopped_early=sum(record.stopped is not None for record in records),
        failed=failed,
        failures=str(run.failures) if failed else None,
        truncated=truncation(records, identity["turns"]),
        persona_set=settings.get("persona_set"),
        provenance=provenance(settings, models, list(PROMPTS)),
    )
    write_json(run.main, result.model_dump(mode="json"))
    plot_levels([(result.name, metrics)], result.plot, title=f"ALOE: {result.name}")
    return result


# Settings that change what the numbers mean; a result is only resumed or replaced under the same ones
# (with the resolved local dtype, the persona texts and the prompt files: see run_identity).
IDENTITY_KEYS = ("model", "user_model", "judge_model", "turns", "seed", "temperature", "top_p", "max_new_tokens",
                 "user_temperature", "user_max_new_tokens", "judge_temperature", "judge_max_new_tokens", "max_attempts")


def run_identity(args, personas: str) -> dict:
    """The identity of a run from its parsed flags and the hash of its persona texts."""
    identity = {key: getattr(args, key) for key in IDENTITY_KEYS}
    specs = [identity["model"], identity["user_model"], identity["judge_model"]]
    identity.update(personas=personas, prompts=prompt_hashes(), dtype=local_dtype(args.dtype, specs))
    for role, key in (("model", "model"), ("user", "user_model"), ("judge", "judge_model")):
        # A model retrained into the same folder is another model: its result must not resume the old one.
        fingerprint = local_weights(identity[key])
        if fingerprint:  # only for local folders, so results of API models keep their settings hash
            identity[f"{role}_weights"] = fingerprint
    if getattr(args, "persona_system_message", False):
        # Only when set, so results written before the flag existed keep their settings hash.
        identity["persona_system_message"] = prompt_hash(PERSONA_SYSTEM_PROMPT)
    return identity


def local_weights(spec: str) -> str | None:
    """The weights fingerprint of a spec naming a local checkpoint folder (None for API, hub and embedded models)."""
    resolved = resolve_spec(spec)
    if resolved.backend != "hf":
        return None
    from aloe.models.local import weights_fingerprint

    return weights_fingerprint(resolved.target)


def local_dtype(choice: str, specs) -> str | None:
    """What --dtype means here: `auto` is bf16 on one machine and fp32 on another, whose replies differ."""
    if not any(resolve_spec(spec).backend in LOCAL_BACKENDS for spec in specs):
        return None  # API models only: the flag changes nothing
    from aloe.models.local import inference_dtype_name

    return inference_dtype_name(choice)


def evaluate(run: RunFiles, pairs: Sequence[PersonaPair], identity: dict, settings: dict,
             load_models: Callable[[], Roles], params: Roles, stage: EvaluationSettings) -> AloeResult:
    """Evaluate `pairs` into `run`'s files: resume what is there (refusing a run of other settings),
    ask the judge again about the turns left unscored, evaluate the rest, and write the result.

    `load_models` is called only when a model call is needed, so a finished run loads nothing.
    """
    run_hash = settings_hash(identity)
    records_path = run.beside("records.jsonl")
    if run.main.exists():  # --overwrite has cleared it already (RunFiles.open)
        existing = read_result(run.main)
        if existing.settings_hash != run_hash:
            raise AloeError(f"{run.main} holds a result of other settings "
                            f"({settings_differences(existing.identity, identity)}); "
                            "pass --overwrite to replace it or choose another --output")
    records = {record.id: record for record in read_eval_records(records_path)} if records_path.exists() else {}
    foreign = [record for record in records.values() if record.settings_hash != run_hash]
    if foreign:
        raise AloeError(f"{records_path} holds {len(foreign)} conversations run with other settings; "
                        "pass --overwrite to start over or choose another --output")
    pending = [pair for pair in pairs if pair.id not in records]
    # A verdict the judge left unparsed is asked again on the next run, never stored as a number.
    unscored = [records[pair.id] for pair in pairs if pair.id in records
                and any(turn.judge.score is None for turn in records[pair.id].turns)]
    log.info("%d conversations: %d already in %s, %d to evaluate", len(pairs), len(pairs) - len(pending),
             records_path, len(pending))

    described = {role: {"spec": identity[key]} for role, key in (("model", "model"), ("user", "user_model"),
                                                                 ("judge", "judge_model"))}
    if pending or unscored:
        models = load_models()
        described = {role: model.describe() for role, model in models.items()}
        engine = AloeEvaluation(models, params, identity["turns"], run_hash, max_attempts=stage.max_attempts,
                                persona_system_message="persona_system_message" in identity)
    if unscored:
        before = sum(turn.judge.score is None for record in unscored for turn in record.turns)
        changed = engine.rejudge(unscored)
        rewrite_jsonl(records_path, list(records.values()))
        after = sum(turn.judge.score is None for record in unscored for turn in record.turns)
        log.info("asked the judge again about %d unscored turns from the last run: %d now scored (%d conversations "
                 "updated in %s)", before, before - after, len(changed), records_path)
    failed = 0
    if pending:
        with JsonlWriter(records_path) as writer, run.failure_log() as log_failure:

            def finish(record):
                writer.write(record)
                records[record.id] = record

            def fail(pair: PersonaPair, turn_index: int, reason: str) -> None:
                nonlocal failed
                log_failure(pair.id, reason, turn=turn_index + 1)
                failed += 1

            try:
                engine.run(pending, finish, fail, group_size=stage.group_size)
            except AloeError as exc:
                raise AloeError(f"{exc} ({len(records)} finished conversations are saved in {records_path}; "
                                "re-run the same command to resume)") from None
    else:
        run.failures.unlink(missing_ok=True)  # nothing left to retry
    return write_result(run, settings, identity, [records[pair.id] for pair in pairs if pair.id in records],
                        described, failed)


def merge_results(run: RunFiles) -> tuple[AloeResult, str]:
    """Join the finished shard results of `run`'s output into one result, metrics recomputed over all
    conversations; returns it with a note for the summary line."""
    shard_runs = run.complete_shards()
    shards = [read_result(shard.main) for shard in shard_runs]
    odd = [shard for shard in shards if shard.settings_hash != shards[0].settings_hash]
    if odd:
        raise AloeError(f"the shard results in {run.folder} were run with different settings "
                        f"({settings_differences(shards[0].identity, odd[0].identity)}); re-run the odd shard")
    if run.main.exists():
        existing = read_result(run.main)
        if existing.settings_hash != shards[0].settings_hash:
            raise AloeError(f"{run.main} holds a result with other settings "
                            f"({settings_differences(existing.identity, shards[0].identity)}); pass --overwrite")
    records_path = run.beside("records.jsonl")
    kept, dropped = merge_jsonl([shard.records for shard in shards], records_path)
    settings = {**shards[0].settings, "shard": None, "merged_from": [str(shard.main) for shard in shard_runs]}
    result = write_result(run, settings, shards[0].identity, read_eval_records(records_path),
                          shards[0].provenance["models"])
    return result, f" (merged {len(shards)} shards, {dropped} duplicates dropped)"


def summary(result: AloeResult, path: Path, elapsed: float, extra: str = "") -> str:
    """The stage's one-line summary."""
    m = result.metrics

    def num(value, fmt="{:.2f}"):
        return "n/a" if value is None else fmt.format(value)

    cut = result.truncated

    return (f"{result.name}: {m['conversations']} conversations x {m['turns']} turns{extra}; "
            f"AL(1) {num(m['al'][0])}, AL({m['turns']}) {num(m['al'][-1])}, mean AL {num(m['mean_al'])}, "
            f"IR {num(m['ir'], '{:+.3f}')}, N-IR {num(m['n_ir'], '{:+.3f}')}; "
            f"{m['parsed']} scores parsed, {m['unparsed']} unparsed; cut at the token cap: replies "
            f"{num(cut.get('model'), '{:.0%}')}, user messages {num(cut.get('user'), '{:.0%}')}; "
            + (f"{result.failed} conversations failed (listed in {result.failures}; a re-run retries them); "
               if result.failed else "")
            + f"wrote {result.records}, "
            f"{result.plot} and {path} in {elapsed:.1f}s")


def plot_levels(curves: Sequence[tuple[str, dict]], path: str | Path, title: str = "ALOE alignment level per turn") -> Path:
    """One line per (label, metrics) with its bootstrap band: AL(k) against turn k, on the 1-5 scale."""
    from matplotlib.ticker import MaxNLocator

    from aloe.plots import pyplot, save_figure

    plt = pyplot()

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for label, metrics in curves:
        rows = [row for row in metrics["per_turn"] if row["al"] is not None]
        turns = [row["turn"] for row in rows]
        line, = axes.plot(turns, [row["al"] for row in rows], marker="o", label=label)
        banded = [row for row in rows if row["al_ci"] is not None]
        if banded:
            axes.fill_between([row["turn"] for row in banded], [row["al_ci"][0] for row in banded],
                              [row["al_ci"][1] for row in banded], color=line.get_color(), alpha=0.18, linewidth=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("turn k")
    axes.set_ylabel("alignment level AL(k)")
    axes.set_ylim(0.8, 5.2)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return save_figure(figure, path)
