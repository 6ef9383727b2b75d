"""Evaluate a model on the ALOE benchmark: alignment to a simulated user, scored 1-5 at every turn.

    python evaluation/eval_aloe.py --model embedded --limit 5 --turns 3
    python evaluation/eval_aloe.py --model llama3_dpo \
        --user-model openai:gpt-4o-mini --judge-model openai:gpt-4o-mini      # the paper's protocol

Writes results/aloe/<model>.json (settings, provenance, metrics with bootstrap intervals), the
per-conversation records to results/aloe/<model>.records.jsonl as they finish, and a plot of AL(k)
to results/aloe/<model>.png. A re-run resumes. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

from aloe.interaction.evaluation import (
    PROMPTS, ROLES, AloeEvaluation, RoleModels, RoleParams, first_unparsed_reason, ordered_pairs, personas_hash,
    plot_levels, prompt_hashes, read_eval_records, result_metrics, settings_hash,
)
from aloe.cli import ArgumentParser, add_model_args, cli_main, model_pool, positive_int, role_spec, sampling_params, shard_arg, take_shard
from aloe.errors import AloeError
from aloe.jsonl import JsonlWriter, merge_jsonl, rewrite_jsonl, write_json
from aloe.interaction.personas import load_pool
from aloe.models import LOCAL_BACKENDS, resolve_spec, short_name
from aloe.provenance import provenance

log = logging.getLogger("eval_aloe")

DATASETS = Path(__file__).resolve().parents[1] / "datasets" / "aloe_eval"
# The user simulator and the judge are fixed parts of the benchmark, not the model under test, so they
# do not follow --model; the paper used GPT-4o-mini for both (see docs/evaluation.md).
DEFAULT_HELPER_MODEL = "embedded"
# Settings that change what the numbers mean; a result is only resumed or replaced under the same ones
# (with the resolved local dtype, the persona texts and the prompt files: see identity_of).
IDENTITY_KEYS = ("model", "user_model", "judge_model", "turns", "seed", "temperature", "top_p", "max_new_tokens",
                 "user_temperature", "user_max_new_tokens", "judge_temperature", "judge_max_new_tokens", "max_attempts")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.set_defaults(max_new_tokens=128)
    group = parser.add_argument_group("benchmark")
    group.add_argument("--user-model", default=None,
                       help=f"user simulator spec (default: {DEFAULT_HELPER_MODEL}; paper: openai:gpt-4o-mini)")
    group.add_argument("--judge-model", default=None,
                       help=f"judge spec (default: {DEFAULT_HELPER_MODEL}; paper: openai:gpt-4o-mini)")
    group.add_argument("--profiles", default=str(DATASETS / "profiles.jsonl"), help="benchmark profiles (20 shipped)")
    group.add_argument("--personalities", default=str(DATASETS / "personalities.jsonl"),
                       help="benchmark personalities (5 shipped)")
    group.add_argument("--turns", type=int, default=10, help="turns per conversation (paper: 10)")
    group.add_argument("--limit", type=int, default=None,
                       help="evaluate only the first N persona pairs (pairs are ordered so any prefix spreads over "
                            "profiles and personalities)")
    group.add_argument("--user-temperature", type=float, default=0.7, help="user simulator sampling temperature")
    group.add_argument("--user-max-new-tokens", type=positive_int, default=64)
    group.add_argument("--judge-temperature", type=float, default=0.0, help="judge temperature (default: greedy)")
    group.add_argument("--judge-max-new-tokens", type=positive_int, default=64)
    group.add_argument("--max-attempts", type=positive_int, default=3,
                       help="samples of the user simulator before an empty message ends a conversation")
    group.add_argument("--group-size", type=positive_int, default=100,
                       help="conversations advanced together in lockstep; records are written per finished group")
    group.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples for the 95%% intervals")
    group.add_argument("--shard", type=shard_arg, default=None,
                       help="i/n: evaluate every n-th pair starting at i into <output stem>.shard-i-of-n.*")
    group.add_argument("--merge", action="store_true",
                       help="join the finished shard results beside --output into one result and stop")
    group.add_argument("--output", default=None, help="result JSON (default: results/aloe/<model>.json)")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing result (of any model or settings) instead of resuming it")
    return parser


# ---------------------------------------------------------------- paths


def output_paths(output: Path, shard: tuple[int, int] | None = None) -> dict[str, Path]:
    # Names are built as strings: Path.with_suffix would treat ".shard-0-of-2" as a suffix and drop it.
    stem = output.stem if output.suffix == ".json" else output.name
    if shard is not None:
        stem = f"{stem}.shard-{shard[0]}-of-{shard[1]}"
    return {kind: output.with_name(stem + ending)
            for kind, ending in (("result", ".json"), ("records", ".records.jsonl"), ("plot", ".png"))}


def read_result(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AloeError(f"{path}: not valid JSON ({exc.msg}); remove it or pass --overwrite") from None
    if not isinstance(data, dict) or "settings_hash" not in data:
        raise AloeError(f"{path}: not an ALOE result file; choose another --output or pass --overwrite")
    return data


def differences(old: dict, new: dict) -> str:
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
               if old.get(key) != new.get(key)]
    return ", ".join(changed) or "settings hash differs"


# ---------------------------------------------------------------- run


def identity_of(args: argparse.Namespace, personas: str) -> dict:
    identity = {key: getattr(args, key) for key in IDENTITY_KEYS}
    specs = {role: role_spec(args, role) for role in ROLES}
    identity.update(model=args.model, user_model=specs["user"], judge_model=specs["judge"],
                    personas=personas, prompts=prompt_hashes(), dtype=local_dtype(args.dtype, specs.values()))
    return identity


def local_dtype(choice: str, specs) -> str | None:
    """What --dtype means here: `auto` is bf16 on one machine and fp32 on another, whose replies differ."""
    if not any(resolve_spec(spec).backend in LOCAL_BACKENDS for spec in specs):
        return None  # API models only: the flag changes nothing
    from aloe.models.local import inference_dtype_name

    return inference_dtype_name(choice)


def role_params(args: argparse.Namespace) -> RoleParams:
    return RoleParams(
        model=sampling_params(args),
        user=sampling_params(args, temperature=args.user_temperature, max_new_tokens=args.user_max_new_tokens),
        judge=sampling_params(args, temperature=args.judge_temperature, max_new_tokens=args.judge_max_new_tokens),
    )


def write_result(paths: dict[str, Path], settings: dict, identity: dict, records, models: dict, args) -> dict:
    metrics = result_metrics(records, identity["turns"], args.bootstrap, args.seed)
    result = {
        "benchmark": "aloe",
        "name": Path(paths["result"]).stem,
        "model": identity["model"],
        "models": {role: identity[key] for role, key in (("model", "model"), ("user", "user_model"),
                                                         ("judge", "judge_model"))},
        "settings": settings,
        "identity": identity,
        "settings_hash": settings_hash(identity),
        "records": str(paths["records"]),
        "plot": str(paths["plot"]),
        "metrics": metrics,
        "first_unparsed_reason": first_unparsed_reason(records),
        "stopped_early": sum(record.stopped is not None for record in records),
        "provenance": provenance(settings, models, list(PROMPTS)),
    }
    write_json(paths["result"], result)
    plot_levels([(result["name"], metrics)], paths["plot"], title=f"ALOE: {result['name']}")
    return result


def summarize(result: dict, path: Path, elapsed: float, extra: str = "") -> None:
    m = result["metrics"]

    def num(value, fmt="{:.2f}"):
        return "n/a" if value is None else fmt.format(value)

    print(f"{result['name']}: {m['conversations']} conversations x {m['turns']} turns{extra}; "
          f"AL(1) {num(m['al'][0])}, AL({m['turns']}) {num(m['al'][-1])}, mean AL {num(m['mean_al'])}, "
          f"IR {num(m['ir'], '{:+.3f}')}, N-IR {num(m['n_ir'], '{:+.3f}')}; "
          f"{m['parsed']} scores parsed, {m['unparsed']} unparsed; wrote {result['records']}, "
          f"{result['plot']} and {path} in {elapsed:.1f}s")
    if m["parsed"] == 0 and m["unparsed"]:
        raise AloeError(f"the judge gave no readable score ({m['unparsed']} unparsed; first reason: "
                        f"{result['first_unparsed_reason']}); use a stronger --judge-model")


def merge_shards(args: argparse.Namespace, output: Path, started: float) -> None:
    paths = output_paths(output)
    pattern = re.compile(re.escape(paths["result"].stem) + r"\.shard-(\d+)-of-(\d+)\.json$")
    found = {}
    for candidate in sorted(output.parent.glob(f"{paths['result'].stem}.shard-*-of-*.json")):
        match = pattern.match(candidate.name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = candidate
    if not found:
        raise AloeError(f"no shard results such as {paths['result'].stem}.shard-0-of-2.json in {output.parent}; "
                        "run each --shard i/n to the end first")
    counts = {count for _, count in found}
    if len(counts) != 1:
        raise AloeError(f"shard results of different splits ({', '.join(f'of-{n}' for n in sorted(counts))}) "
                        f"in {output.parent}; remove the stale ones")
    count = counts.pop()
    missing = [str(index) for index in range(count) if (index, count) not in found]
    if missing:
        raise AloeError(f"shards {', '.join(missing)} of {count} have no finished result in {output.parent}; "
                        "run them to the end first")
    shards = [read_result(found[(index, count)]) for index in range(count)]
    odd = [shard for shard in shards if shard["settings_hash"] != shards[0]["settings_hash"]]
    if odd:
        raise AloeError(f"the shard results in {output.parent} were run with different settings "
                        f"({differences(shards[0]['identity'], odd[0]['identity'])}); re-run the odd shard")
    if paths["result"].exists() and not args.overwrite:
        existing = read_result(paths["result"])
        if existing["settings_hash"] != shards[0]["settings_hash"]:
            raise AloeError(f"{paths['result']} holds a result with other settings "
                            f"({differences(existing['identity'], shards[0]['identity'])}); pass --overwrite")
    kept, dropped = merge_jsonl([shard["records"] for shard in shards], paths["records"])
    records = read_eval_records(paths["records"])
    settings = {**shards[0]["settings"], "shard": None, "merged_from": [str(found[(i, count)]) for i in range(count)]}
    args.bootstrap, args.seed = settings["bootstrap"], settings["seed"]
    result = write_result(paths, settings, shards[0]["identity"], records,
                          shards[0]["provenance"]["models"], args)
    summarize(result, paths["result"], time.perf_counter() - started, f" (merged {count} shards, {dropped} duplicates dropped)")


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    if args.turns < 1:
        raise AloeError(f"--turns must be at least 1, got {args.turns}")
    if args.limit is not None and args.limit < 1:
        raise AloeError(f"--limit must be at least 1, got {args.limit}")
    args.user_model = args.user_model or DEFAULT_HELPER_MODEL
    args.judge_model = args.judge_model or DEFAULT_HELPER_MODEL
    specs = {role: role_spec(args, role) for role in ROLES}
    for spec in specs.values():
        resolve_spec(spec)  # an unknown spec fails here, before anything is read or written
    output = Path(args.output or Path("results") / "aloe" / f"{short_name(args.model)}.json")
    if args.merge:
        return merge_shards(args, output, started)

    profiles = load_pool(args.profiles)
    personalities = load_pool(args.personalities)
    pairs = ordered_pairs(profiles, personalities)
    pairs = take_shard(pairs[:args.limit] if args.limit else pairs, args.shard)
    identity = identity_of(args, personas_hash(profiles, personalities))
    run_hash = settings_hash(identity)
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    settings["shard"] = list(args.shard) if args.shard else None

    paths = output_paths(output, args.shard)
    if args.shard is not None and args.cache is None:
        # One cache per worker: shards on one machine never wait on each other's SQLite lock.
        args.cache = str(paths["records"].with_name(paths["result"].stem + ".responses.sqlite"))
    if args.overwrite:
        for path in paths.values():
            path.unlink(missing_ok=True)
    elif paths["result"].exists():
        existing = read_result(paths["result"])
        if existing["settings_hash"] != run_hash:
            raise AloeError(f"{paths['result']} holds a result of other settings "
                            f"({differences(existing.get('identity', {}), identity)}); "
                            "pass --overwrite to replace it or choose another --output")
    records = {record.id: record for record in read_eval_records(paths["records"])} if paths["records"].exists() else {}
    foreign = [record for record in records.values() if record.settings_hash != run_hash]
    if foreign:
        raise AloeError(f"{paths['records']} holds {len(foreign)} conversations run with other settings; "
                        "pass --overwrite to start over or choose another --output")
    pending = [pair for pair in pairs if pair.id not in records]
    # DESIGN: a verdict the judge left unparsed is asked again on the next run, never stored as a number.
    unscored = [records[pair.id] for pair in pairs if pair.id in records
                and any(turn.judge.score is None for turn in records[pair.id].turns)]
    log.info("%d conversations: %d already in %s, %d to evaluate", len(pairs), len(pairs) - len(pending),
             paths["records"], len(pending))

    described = {role: {"spec": spec} for role, spec in specs.items()}
    if pending or unscored:
        pool = model_pool(args, paths["result"])
        models = RoleModels(**{role: pool.get(spec) for role, spec in specs.items()})
        described = {role: getattr(models, role).describe() for role in ROLES}
        engine = AloeEvaluation(models, role_params(args), args.turns, run_hash, max_attempts=args.max_attempts)
    if unscored:
        before = sum(turn.judge.score is None for record in unscored for turn in record.turns)
        changed = engine.rejudge(unscored)
        rewrite_jsonl(paths["records"], list(records.values()))
        after = sum(turn.judge.score is None for record in unscored for turn in record.turns)
        log.info("asked the judge again about %d unscored turns from the last run: %d now scored (%d conversations "
                 "updated in %s)", before, before - after, len(changed), paths["records"])
    if pending:
        with JsonlWriter(paths["records"]) as writer:

            def finish(record):
                writer.write(record)
                records[record.id] = record

            try:
                engine.run(pending, finish, group_size=args.group_size)
            except AloeError as exc:
                raise AloeError(f"{exc} ({len(records)} finished conversations are saved in {paths['records']}; "
                                "re-run the same command to resume)") from None
    selected = [records[pair.id] for pair in pairs]
    result = write_result(paths, settings, identity, selected, described, args)
    summarize(result, paths["result"], time.perf_counter() - started)


if __name__ == "__main__":
    sys.exit(main())
