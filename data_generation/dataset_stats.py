"""Summarize a conversation file: sizes, judge behaviour, reply lengths, what the extractor found.

    python data_generation/dataset_stats.py runs/demo/conversations.jsonl
        -> runs/demo/conversations.stats.json and runs/demo/conversations.stats.png

Works on files from the original ALOE code too; statistics they cannot support (judge verdicts)
are null with a count of 0.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from statistics import mean

from aloe.cli import ArgumentParser, cli_main, output_file
from aloe.interaction.conversations import is_none_value, parse_extraction
from aloe.jsonl import read_records, write_json
from aloe.records import Conversation


def _rate(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _mean(values: list[float]) -> float | None:
    return round(mean(values), 2) if values else None


def compute_stats(conversations: list[Conversation]) -> dict:
    turns = [turn for conversation in conversations for turn in conversation.conversations]
    judged = [turn.judge for turn in turns if turn.judge is not None]
    outcomes = Counter(judgement.outcome for judgement in judged)
    both_parsed = outcomes["agree"] + outcomes["tie"]
    orders = [order for judgement in judged for order in judgement.orders]
    extractor_raw = [turn.model_extra.get("extractor_output") for turn in turns]
    extractor_seen = [raw for raw in extractor_raw if raw is not None]

    per_turn: list[dict] = []
    for index in range(max((len(c.conversations) for c in conversations), default=0)):
        at_k = [c.conversations[index] for c in conversations if len(c.conversations) > index]
        judged_k = [turn.judge for turn in at_k if turn.judge is not None]
        per_turn.append({
            "turn": index + 1,
            "conversations": len(at_k),
            "extractor_profile_none_rate": _rate(sum(is_none_value(t.inferred_profile) for t in at_k), len(at_k)),
            "extractor_personality_none_rate": _rate(sum(is_none_value(t.inferred_personality) for t in at_k), len(at_k)),
            "hinted_preferred_rate": _rate(sum(j.winner == "hinted" for j in judged_k), len(judged_k)),
        })

    def words(text: str) -> int:
        return len(text.split())

    return {
        "conversations": len(conversations),
        "turns": len(turns),
        "turns_per_conversation": {
            "mean": _mean([len(c.conversations) for c in conversations]),
            "min": min((len(c.conversations) for c in conversations), default=0),
            "max": max((len(c.conversations) for c in conversations), default=0),
        },
        "stopped_early": sum("stopped" in c.meta for c in conversations),
        "judged_turns": len(judged),
        "hinted_preferred_rate": _rate(sum(j.winner == "hinted" for j in judged), len(judged)),
        "hinted_preferred_rate_when_orders_agree": _rate(
            sum(j.winner == "hinted" for j in judged if j.outcome == "agree"), outcomes["agree"]),
        "judge_order_agreement": _rate(outcomes["agree"], both_parsed),
        "judge_outcomes": {name: outcomes[name] for name in ("agree", "tie", "unparsed")},
        "tie_rate": _rate(outcomes["tie"], len(judged)),
        "judge_parse_failures": {"asks": len(orders), "unparsed": sum(o.verdict is None for o in orders)},
        "extractor_parse_failures": {"outputs": len(extractor_seen),
                                     "unparsed": sum(not parse_extraction(raw).parsed for raw in extractor_seen)},
        "continued_with_preferred_rate": _rate(sum((t.chosen or "preferred") == "preferred" for t in turns), len(turns)),
        "reply_words": {
            "preferred_mean": _mean([words(t.assistant.preferred) for t in turns]),
            "rejected_mean": _mean([words(t.assistant.rejected) for t in turns]),
            "user_mean": _mean([words(t.user) for t in turns]),
        },
        "per_turn": per_turn,
    }


def plot_stats(stats: dict, conversations: list[Conversation], path: Path) -> None:
    from aloe.plots import pyplot, save_figure

    plt = pyplot()

    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    turns = [row["turn"] for row in stats["per_turn"]]

    def series(key):
        return [row[key] if row[key] is not None else float("nan") for row in stats["per_turn"]]

    axes[0, 0].plot(turns, series("extractor_profile_none_rate"), marker="o", label="profile")
    axes[0, 0].plot(turns, series("extractor_personality_none_rate"), marker="o", label="personality")
    axes[0, 0].set(title="Extractor found nothing (None rate)", xlabel="turn", ylabel="rate", ylim=(-0.05, 1.05))
    axes[0, 0].legend()
    axes[0, 1].plot(turns, series("hinted_preferred_rate"), marker="o", color="tab:green")
    axes[0, 1].set(title="Hinted reply preferred", xlabel="turn", ylabel="rate", ylim=(-0.05, 1.05))
    lengths = {branch: [len(getattr(t.assistant, branch).split()) for c in conversations for t in c.conversations]
               for branch in ("preferred", "rejected")}
    axes[1, 0].hist([lengths["preferred"], lengths["rejected"]], bins=15, label=["preferred", "rejected"])
    axes[1, 0].set(title="Reply length", xlabel="words", ylabel="replies")
    axes[1, 0].legend()
    outcomes = stats["judge_outcomes"]
    axes[1, 1].bar(list(outcomes), list(outcomes.values()), color=["tab:green", "tab:orange", "tab:gray"])
    axes[1, 1].set(title="Judge: both orders", ylabel="turns")
    figure.suptitle(f"{stats['conversations']} conversations, {stats['turns']} turns")
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


@cli_main
def main(argv=None):
    parser = ArgumentParser(description="Summarize a conversation file as JSON and a PNG.")
    parser.add_argument("input", help="conversations JSONL")
    parser.add_argument("--output", type=output_file, default=None, help="stats JSON (default: <input stem>.stats.json); the PNG sits beside it")
    args = parser.parse_args(argv)
    source = Path(args.input)
    conversations = read_records(source, Conversation, unique_ids=True)
    stats = {"input": str(source), **compute_stats(conversations)}
    output = Path(args.output) if args.output else source.with_name(f"{source.stem}.stats.json")
    write_json(output, stats)
    plot_stats(stats, conversations, output.with_suffix(".png"))
    print(json.dumps({key: stats[key] for key in ("conversations", "turns", "hinted_preferred_rate",
                                                    "judge_order_agreement", "tie_rate")}))
    print(f"wrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
