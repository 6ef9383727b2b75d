"""Sibling preference pairs: a system message's own gold answer against a sibling's.

Every instruction has several system messages (preference sets), each with its own gold answer.
For each system message, chosen = its own answer and rejected = the answer written for the next
sibling of the same instruction (in set order, wrapping around). The rejected answer is a good
answer for someone else, so the pair teaches fit to the system message, not general quality.

Pairs are written in trl's conversational preference format, which DPO, ORPO and the reward trainer
all read: `prompt` = [system message, instruction], `chosen` / `rejected` = one assistant message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aloe.system_messages.records import SystemMessageRow


@dataclass
class PairStats:
    pairs: int = 0
    without_sibling: int = 0  # rows whose instruction has no other row: nothing to contrast
    same_answer: int = 0  # the sibling's answer equals the row's own: no signal, skipped


def prompt_messages(system: str, prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def sibling_pairs(rows: Sequence[SystemMessageRow]) -> tuple[list[dict], PairStats]:
    """One pair per row that has a sibling with a different answer, in input order."""
    by_instruction: dict[str, list[SystemMessageRow]] = {}
    for row in rows:
        by_instruction.setdefault(row.instruction_id, []).append(row)
    stats = PairStats()
    pairs = []
    for row in rows:
        siblings = sorted(by_instruction[row.instruction_id], key=lambda r: (r.set_index or 0, r.id))
        if len(siblings) < 2:
            stats.without_sibling += 1
            continue
        sibling = siblings[(siblings.index(row) + 1) % len(siblings)]
        if sibling.output.strip() == row.output.strip():
            stats.same_answer += 1
            continue
        pairs.append({
            "id": f"{row.id}~{sibling.id}",
            "prompt": prompt_messages(row.system, row.prompt),
            "chosen": [{"role": "assistant", "content": row.output}],
            "rejected": [{"role": "assistant", "content": sibling.output}],
            "instruction_id": row.instruction_id,
            "chosen_row": row.id,
            "rejected_row": sibling.id,
            "main_source": row.main_source,
        })
        stats.pairs += 1
    return pairs, stats
