"""Diversity of persona pools at a glance: sizes, lengths, similarities, distinct-2; JSON to stdout.

    python persona_generation/pool_stats.py runs/demo/profiles.jsonl datasets/seed_profiles.jsonl

For each file: count, word-length distribution, mean and max pairwise cosine similarity, the
nearest-neighbour similarity distribution (each persona's max similarity to any other) and
distinct-2 (distinct word bigrams / all word bigrams). One PNG histogram of nearest-neighbour
similarity, one series per file, is written to --plot. With --output the JSON goes to that file
(the PNG beside it) and stdout gets a one-line summary.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from aloe.cli import ArgumentParser, cli_main, output_file
from aloe.jsonl import write_json
from aloe.sentence_embeddings import DEFAULT_CHUNK_ROWS, load_embedder
from aloe.interaction.personas import load_pool

HISTOGRAM_BINS = np.linspace(-0.2, 1.0, 25)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="pool files (Persona JSONL or bare JSON strings)")
    parser.add_argument("--embedder", default="embedded", help="sentence embedder spec (default: embedded)")
    parser.add_argument("--output", type=output_file, default=None, help="stats JSON file to write (default: the JSON goes to stdout)")
    parser.add_argument("--plot", type=output_file, default=None, help="histogram PNG (default: <stem>.nn_similarity.png beside "
                                                     "--output, else beside the first file)")
    return parser


def distinct_2(texts: list[str]) -> float:
    bigrams = []
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        bigrams.extend(zip(words, words[1:]))
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def nearest_neighbour_similarity(vectors: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """Each row's max cosine similarity to any other row, in chunks (memory chunk x n)."""
    nearest = np.full(len(vectors), -np.inf, dtype=np.float32)
    for start in range(0, len(vectors), chunk_rows):
        block = vectors[start:start + chunk_rows] @ vectors.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        nearest[start:start + len(block)] = block.max(axis=1)
    return nearest


def pool_stats(texts: list[str], vectors: np.ndarray) -> dict:
    lengths = np.array([len(text.split()) for text in texts])
    n = len(texts)
    stats = {
        "count": n,
        "words": {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 1),
                  "median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90)),
                  "max": int(lengths.max())},
        "distinct_2": round(distinct_2(texts), 4),
    }
    if n < 2:
        return stats
    # Mean over pairs i != j without the n x n matrix: rows are unit vectors, so
    # sum_ij e_i.e_j = |sum_i e_i|^2 and the diagonal contributes n.
    total = vectors.sum(axis=0, dtype=np.float64)
    stats["mean_pairwise_similarity"] = round(float((total @ total - n) / (n * (n - 1))), 4)
    nearest = nearest_neighbour_similarity(vectors)
    stats["max_pairwise_similarity"] = round(float(nearest.max()), 4)
    stats["nearest_neighbour_similarity"] = {
        "mean": round(float(nearest.mean()), 4), "median": round(float(np.median(nearest)), 4),
        "p90": round(float(np.percentile(nearest, 90)), 4),
        "above_0.6": int((nearest > 0.6).sum()),
        "histogram": {"bins": [round(float(b), 2) for b in HISTOGRAM_BINS],
                      "counts": np.histogram(nearest, HISTOGRAM_BINS)[0].tolist()},
    }
    stats["_nearest"] = nearest
    return stats


def plot(results: dict[str, dict], path: Path) -> None:
    from aloe.plots import pyplot, save_figure

    plt = pyplot()

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, stats in results.items():
        if "_nearest" in stats:
            axes.hist(stats["_nearest"], bins=HISTOGRAM_BINS, alpha=0.5, label=f"{Path(name).name} (n={stats['count']})")
    axes.axvline(0.6, color="black", linestyle="--", linewidth=1, label="novelty threshold 0.6")
    axes.set_xlabel("nearest-neighbour cosine similarity")
    axes.set_ylabel("personas")
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)


@cli_main
def main(argv=None):
    args = build_parser().parse_args(argv)
    pools = {path: [persona.text for persona in load_pool(path)] for path in args.files}
    embedder = load_embedder(args.embedder)
    results = {path: pool_stats(texts, embedder.encode(texts)) for path, texts in pools.items()}
    beside = Path(args.output or args.files[0])
    plot_path = Path(args.plot) if args.plot else beside.with_name(f"{beside.stem}.nn_similarity.png")
    plot(results, plot_path)
    for stats in results.values():
        stats.pop("_nearest", None)
    report = {"files": results, "embedder": args.embedder, "plot": str(plot_path)}
    if args.output is None:
        print(json.dumps(report, indent=2))
        return
    write_json(args.output, report)
    counts = ", ".join(f"{Path(path).name} {stats['count']}" for path, stats in results.items())
    print(f"pool stats of {len(results)} files ({counts}) in {args.output}; histogram {plot_path}")


if __name__ == "__main__":
    sys.exit(main())
