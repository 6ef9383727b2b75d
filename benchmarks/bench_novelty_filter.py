"""Persona novelty filter vs the pairwise approach, and the filter at a 100,000-persona pool.

    python benchmarks/bench_novelty_filter.py [--pool 2000] [--candidates 100] [--pairs 200] [--scale 100000]

1. With the real embedded embedder (all-MiniLM-L6-v2): one round of `--candidates` candidates
   against a pool of `--pool` personas.
   - filter: the pool is embedded once (a one-time cost, also reported); a round embeds the
     candidates once and compares them with the pool's matrix by chunked matrix products.
   - pairwise: every (candidate, pool persona) comparison embeds both texts anew, as the original
     ALOE code did. `--pairs` comparisons are timed and the rest extrapolated linearly (each
     comparison is the same work).
   - re-embed pool per candidate: the pool embedded again (batched) for every candidate;
     extrapolated from the measured one-time pool embedding.
2. In a fresh process (so the embedder's memory does not count): a pool matrix of `--scale` random
   unit vectors of dimension 384 grown incrementally, and one round of candidates compared with it;
   peak RSS of that process.

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def persona_texts(count: int, seed: int) -> list[str]:
    """Distinct profile-like texts: sentences of the shipped seed profiles recombined at random."""
    from aloe.interaction.personas import load_pool

    sentences = [s.strip() + "." for p in load_pool(ROOT / "datasets/seed_profiles.jsonl")
                 for s in p.text.split(".") if len(s.split()) > 2]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, 8)) for _ in range(count)]


def embedder_part(pool_size: int, candidates: int, pairs: int) -> dict:
    import numpy as np

    from aloe.sentence_embeddings import NoveltyFilter, load_embedder

    embedder = load_embedder("embedded")
    pool, new = persona_texts(pool_size, 0), persona_texts(candidates, 1)
    embedder.encode(new[:8])  # warm-up: first call pays one-off setup

    started = time.perf_counter()
    novelty = NoveltyFilter(embedder, threshold=0.6)
    novelty.add(pool)
    pool_embed_s = time.perf_counter() - started
    started = time.perf_counter()
    decisions = novelty.filter(new)
    round_s = time.perf_counter() - started

    rng = random.Random(2)
    sample = [(rng.randrange(candidates), rng.randrange(pool_size)) for _ in range(pairs)]
    started = time.perf_counter()
    for c, p in sample:
        a, b = embedder.encode([new[c], pool[p]])
        float(np.dot(a, b))
    pair_s = (time.perf_counter() - started) / pairs
    return {
        "pool": pool_size, "candidates": candidates, "accepted": sum(d.accepted for d in decisions),
        "pool_embed_s": pool_embed_s, "filter_round_s": round_s,
        "pairwise_pairs_timed": pairs, "pairwise_per_pair_s": pair_s,
        "pairwise_round_s": pair_s * pool_size * candidates,
        "reembed_round_s": pool_embed_s * candidates,
    }


def scale_part(pool_size: int, candidates: int, dim: int = 384) -> dict:
    """Run in a fresh process: numpy and the filter only."""
    import numpy as np

    from aloe.sentence_embeddings import NoveltyFilter

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(0)

    def unit(n):
        rows = rng.standard_normal((n, dim), dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    novelty = NoveltyFilter(None, threshold=0.6, dim=dim)
    started = time.perf_counter()
    for start in range(0, pool_size, 10_000):
        novelty.add_embeddings(unit(min(10_000, pool_size - start)))
    grow_s = time.perf_counter() - started
    size = len(novelty)
    queries = unit(candidates)
    started = time.perf_counter()
    decisions = novelty.filter_embeddings([""] * candidates, queries)
    compare_s = time.perf_counter() - started
    return {
        "pool": size, "dim": dim, "candidates": candidates, "accepted": sum(d.accepted for d in decisions),
        "matrix_mb": novelty.matrix.nbytes / 2**20, "buffer_mb": novelty._matrix.nbytes / 2**20,
        "grow_s": grow_s, "compare_s": compare_s,
        "rss_after_imports_mb": rss_start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=200, help="pairwise comparisons actually timed")
    parser.add_argument("--scale", type=int, default=100_000, help="pool size of the memory/scale part")
    parser.add_argument("--scale-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_only:
        print(json.dumps(scale_part(args.scale, args.candidates)))
        return 0

    scale = json.loads(subprocess.run(
        [sys.executable, __file__, "--scale-only", "--scale", str(args.scale), "--candidates", str(args.candidates)],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    e = embedder_part(args.pool, args.candidates, args.pairs)

    print(f"### Novelty filter vs pairwise, pool {e['pool']}, {e['candidates']} candidates (embedded MiniLM)\n")
    print("| approach | one round | vs filter |")
    print("|---|---:|---:|")
    print(f"| filter: embed candidates once + chunked matrix product | {e['filter_round_s']:.2f} s | 1x |")
    print(f"| pairwise: embed both texts per comparison ({e['pool'] * e['candidates']:,} comparisons; "
          f"{e['pairwise_pairs_timed']} timed, {1000 * e['pairwise_per_pair_s']:.1f} ms each, extrapolated) | "
          f"{e['pairwise_round_s']:,.0f} s | {e['pairwise_round_s'] / e['filter_round_s']:,.0f}x |")
    print(f"| re-embed the pool for every candidate (batched; extrapolated from one pool embedding) | "
          f"{e['reembed_round_s']:,.0f} s | {e['reembed_round_s'] / e['filter_round_s']:,.0f}x |")
    print(f"\nOne-time pool embedding for the filter: {e['pool_embed_s']:.1f} s "
          f"(filter incl. it: {e['pool_embed_s'] + e['filter_round_s']:.1f} s, "
          f"{e['pairwise_round_s'] / (e['pool_embed_s'] + e['filter_round_s']):,.0f}x faster than pairwise).\n")
    print(f"### Filter at a {scale['pool']:,}-persona pool (random unit vectors, dim {scale['dim']})\n")
    print("| pool matrix | buffer | grow (10k rows at a time) | compare {0} candidates | peak RSS (process) |".format(scale["candidates"]))
    print("|---:|---:|---:|---:|---:|")
    print(f"| {scale['matrix_mb']:.0f} MB | {scale['buffer_mb']:.0f} MB | {scale['grow_s']:.2f} s | "
          f"{scale['compare_s']:.3f} s | {scale['peak_rss_mb']:.0f} MB (after imports: {scale['rss_after_imports_mb']:.0f} MB) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
