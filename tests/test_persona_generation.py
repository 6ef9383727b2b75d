"""Persona generation end to end: the real embedded embedder, a tiny random llama, resume, bad input, shards."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from aloe.sentence_embeddings import NoveltyFilter, load_embedder, max_similarity
from aloe.jsonl import JsonlWriter
from aloe.interaction.personas import load_pool
from stage_scripts import load_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]

SEEDS = [
    "A 34-year-old nurse in Manila who lives with her parents, sings karaoke on Fridays and raises orchids on the balcony.",
    "A retired train driver in Leeds, a widower with four grandchildren, who walks his terrier along the canal every morning.",
    "A 19-year-old physics student in Nairobi who shares a flat with two cousins, plays chess online and cooks githeri on Sundays.",
    "A baker in Lyon who gets up at 3 a.m., rides a cargo bike to the market and spends August at her sister's house in Brittany.",
    "A software tester in Sao Paulo, father of a newborn, who follows Palmeiras and takes Portuguese guitar lessons on Thursdays.",
    "A sheep farmer on the Isle of Skye who fishes for mackerel in summer, knits his own jumpers and has never owned a car.",
]


generate = load_script("persona_generation/generate_personas.py")
merge = load_script("persona_generation/merge_pools.py")
stats = load_script("persona_generation/pool_stats.py")


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("embedded")


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir, tmp_path_factory):
    """The tiny random llama with one token id in 30 counted as end-of-sequence, so that, like a real
    model, it ends most replies on its own (at random lengths) and only some hit --max-new-tokens."""
    target = tmp_path_factory.mktemp("tiny-llama-stopping")
    shutil.copytree(tiny_model_dir, target, dirs_exist_ok=True)
    config_path = target / "generation_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    vocab = json.loads((target / "config.json").read_text())["vocab_size"]
    config["eos_token_id"] = list(range(7, vocab, 30))
    config_path.write_text(json.dumps(config))
    return target


@pytest.fixture
def seeds(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "text": text}) + "\n" for i, text in enumerate(SEEDS)))
    return path


def tiny_args(tiny_model, seeds, output, *extra):
    # The tiny random llama writes token soup: one run-on line per reply, so a reply is one candidate.
    return ["--kind", "profile", "--model", f"hf:{tiny_model}", "--seeds", str(seeds), "--output", str(output),
            "--examples-per-prompt", "2", "--per-request", "3", "--requests-per-round", "4", "--max-new-tokens", "64", "--max-rounds", "6",
            "--min-words", "2", "--max-words", "400", "--threshold", "0.95", *extra]


def read_ids(path):
    return [json.loads(line)["id"] for line in Path(path).read_text().splitlines()]


# ---------------------------------------------------------------- the filter with the real embedder


def test_filter_rejects_paraphrases_and_same_round_duplicates_and_keeps_distinct_ones(embedder):
    novelty = NoveltyFilter(embedder, threshold=0.6)
    novelty.add(SEEDS, [f"s{i}" for i in range(len(SEEDS))])
    paraphrase = ("A nurse aged 34 living in Manila with her mother and father; she does karaoke every Friday "
                  "and grows orchids on her balcony.")
    distinct = ("A 52-year-old tram conductor in Krakow who collects vinyl jazz records, swims in the Vistula "
                "in winter and looks after her twin grandsons on Saturdays.")
    distinct_too = ("A teenage skateboarder in Melbourne who works weekends at a fish-and-chip shop, "
                    "lives with his mum and two half-sisters and is saving for a van.")
    decisions = novelty.filter([paraphrase, distinct, distinct, distinct_too], ["p", "d", "d2", "t"])
    assert [d.accepted for d in decisions] == [False, True, False, True]
    assert decisions[0].nearest == "s0" and decisions[0].max_similarity > 0.6
    assert decisions[2].nearest == "d" and decisions[2].max_similarity > 0.99
    assert all(d.max_similarity <= 0.6 for d in decisions if d.accepted)
    assert len(novelty) == len(SEEDS) + 2


def test_embeddings_are_normalized_and_each_text_embedded_once(embedder):
    vectors = embedder.encode(SEEDS)
    assert vectors.shape == (len(SEEDS), embedder.dim) and vectors.dtype.name == "float32"
    assert abs(float((vectors ** 2).sum(axis=1).mean()) - 1.0) < 1e-4


@pytest.mark.parametrize("kind", ["profiles", "personalities"])
def test_evaluation_personas_are_far_from_the_seeds(embedder, kind):
    eval_path, seed_path = ROOT / f"datasets/aloe_eval/{kind}.jsonl", ROOT / f"datasets/seed_{kind}.jsonl"
    if not eval_path.exists() or not seed_path.exists():
        pytest.skip(f"{eval_path} or {seed_path} is not written yet")
    held_out, seeds = load_pool(eval_path), load_pool(seed_path)
    best, nearest = max_similarity(embedder.encode([p.text for p in held_out]), embedder.encode([p.text for p in seeds]))
    worst = int(best.argmax())
    assert best.max() <= 0.6, f"{held_out[worst].id} is {best.max():.3f} similar to {seeds[nearest[worst]].id}"
    assert len(held_out) == {"profiles": 20, "personalities": 5}[kind]


# ---------------------------------------------------------------- generate_personas.py with a tiny model


def test_end_to_end_with_a_tiny_model_writes_seeds_then_generated_records(tiny_model, seeds, tmp_path, capsys):
    output = tmp_path / "run" / "profiles.jsonl"
    assert generate.main(tiny_args(tiny_model, seeds, output, "--target", "10", "--max-rounds", "4")) == 0
    pool = load_pool(output)
    assert [p.id for p in pool[:len(SEEDS)]] == [f"s{i}" for i in range(len(SEEDS))]
    generated = pool[len(SEEDS):]
    assert len(pool) == 10 and len({p.id for p in pool}) == 10
    assert all(p.source == "generated" and p.round >= 1 and p.max_similarity <= 0.95 for p in generated)
    log = json.loads(output.with_name("profiles.rounds.json").read_text())["rounds"]
    assert log[0]["requests"] == 4 and log[0]["completion_tokens"] > 0
    assert {"candidates", "parsed", "accepted", "acceptance_rate", "generate_s", "filter_s"} <= log[0].keys()
    assert sum(entry["accepted"] for entry in log) == 4
    assert output.with_name("profiles.provenance.json").exists()
    assert "target reached" in capsys.readouterr().out


def test_resume_after_an_interruption_reaches_the_target_without_duplicates(tiny_model, seeds, tmp_path,
                                                                            monkeypatch, capsys):
    output = tmp_path / "profiles.jsonl"
    original_write = JsonlWriter.write
    written = Counter()

    def write_then_die(self, record):
        original_write(self, record)
        if getattr(record, "source", None) == "generated":
            written["generated"] += 1
            if written["generated"] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(JsonlWriter, "write", write_then_die)
    assert generate.main(tiny_args(tiny_model, seeds, output, "--target", "11")) == 130
    monkeypatch.undo()
    assert len(read_ids(output)) == len(SEEDS) + 2
    with output.open("a") as handle:
        handle.write('{"id": "half-written')  # a kill in the middle of a line
    assert generate.main(tiny_args(tiny_model, seeds, output, "--target", "11")) == 0
    ids = read_ids(output)
    assert len(ids) == 11 and len(set(ids)) == 11
    assert "target reached" in capsys.readouterr().out
    rounds = json.loads(output.with_name("profiles.rounds.json").read_text())["rounds"]
    assert rounds[0]["round"] >= 2  # the interrupted run logged nothing; the resumed one numbers rounds after it
    assert generate.main(tiny_args(tiny_model, seeds, output, "--target", "11")) == 0
    assert read_ids(output) == ids  # at the target: nothing to do, nothing appended


def test_overwrite_starts_over_and_a_short_run_says_the_target_was_not_reached(tiny_model, seeds, tmp_path, capsys):
    output = tmp_path / "profiles.jsonl"
    assert generate.main(tiny_args(tiny_model, seeds, output, "--target", "100", "--max-rounds", "1")) == 0
    out = capsys.readouterr().out
    assert "TARGET NOT REACHED within --max-rounds 1" in out
    first = read_ids(output)
    assert generate.main(tiny_args(tiny_model, seeds, output, "--target", "7", "--overwrite")) == 0
    assert len(read_ids(output)) == 7 and read_ids(output)[:len(SEEDS)] == first[:len(SEEDS)]


def test_seed_repository_format_is_accepted(tiny_model, tmp_path):
    bare = tmp_path / "seeds.jsonl"
    bare.write_text("".join(json.dumps(text) + "\n" for text in SEEDS))
    output = tmp_path / "profiles.jsonl"
    assert generate.main(tiny_args(tiny_model, bare, output, "--target", "7")) == 0
    pool = load_pool(output)
    assert [p.text for p in pool[:len(SEEDS)]] == SEEDS and pool[-1].source == "generated"


def test_shards_write_their_own_files_and_merge_keeps_seeds_once(tiny_model, seeds, tmp_path, embedder):
    output = tmp_path / "profiles.jsonl"
    for shard in ("0/2", "1/2"):
        assert generate.main(tiny_args(tiny_model, seeds, output, "--target", "10", "--shard", shard)) == 0
    shard_files = sorted(tmp_path.glob("profiles.shard-*-of-2.jsonl"))
    assert len(shard_files) == 2 and all(len(read_ids(path)) == len(SEEDS) + 2 for path in shard_files)
    generated = [read_ids(path)[len(SEEDS):] for path in shard_files]
    assert not set(generated[0]) & set(generated[1])  # different examples and samples per shard
    merged = tmp_path / "merged.jsonl"
    assert merge.main([*map(str, shard_files), "--output", str(merged), "--threshold", "0.95"]) == 0
    ids = read_ids(merged)
    assert ids[:len(SEEDS)] == [f"s{i}" for i in range(len(SEEDS))] and len(ids) == len(set(ids))
    assert len(SEEDS) < len(ids) <= len(SEEDS) + 4
    # Another worker that accepted the same persona under another id: the merge keeps only the first.
    first_generated = load_pool(shard_files[0])[len(SEEDS)]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "other-1", "text": first_generated.text + " ", "source": "generated", "round": 1}) + "\n")
    deduplicated = tmp_path / "deduplicated.jsonl"
    assert merge.main([str(shard_files[0]), str(other), "--output", str(deduplicated), "--threshold", "0.95"]) == 0
    assert read_ids(deduplicated) == read_ids(shard_files[0])
    assert merge.main([str(shard_files[0]), "--output", str(shard_files[0])]) == 1


# ---------------------------------------------------------------- bad input


def assert_one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and needle in err, err


@pytest.mark.parametrize("problem, needle", [
    ("malformed", ":3: record: not valid JSON"),
    ("few", "--examples-per-prompt 5"),
    ("kind", "argument --kind: invalid choice: 'persona'"),
    ("model", "unknown model spec"),
    ("embedder", "embedder path not found"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit_and_loses_nothing(problem, needle, seeds, tmp_path, capsys):
    output = tmp_path / "profiles.jsonl"
    before = "".join(json.dumps({"id": f"s{i}", "text": text}) + "\n" for i, text in enumerate(SEEDS[:3]))
    output.write_text(before)
    seed_file = {"malformed": tmp_path / "bad.jsonl", "few": tmp_path / "few.jsonl"}.get(problem, seeds)
    if problem == "malformed":
        seed_file.write_text(seeds.read_text().splitlines()[0] + "\n" + seeds.read_text().splitlines()[1] + "\n{oops\n")
    if problem == "few":
        seed_file.write_text(json.dumps({"id": "only", "text": SEEDS[0]}) + "\n")
    argv = ["--kind", "persona" if problem == "kind" else "profile", "--seeds", str(seed_file), "--target", "50",
            "--output", str(output), "--overwrite",
            "--model", "no-such-model" if problem == "model" else "embedded",
            "--embedder", "./no/such/embedder" if problem == "embedder" else "embedded"]
    if problem == "few":
        argv.remove("--overwrite")  # the existing output would join the pool; start from the seed file alone
        output.unlink()
    assert generate.main(argv) == 1
    assert_one_line_error(capsys, needle)
    if problem != "few":
        assert output.read_text() == before


# ---------------------------------------------------------------- pool_stats.py


def test_pool_stats_reports_diversity_and_plots(seeds, tmp_path, capsys):
    twice = tmp_path / "twice.jsonl"
    twice.write_text("".join(json.dumps(text) + "\n" for text in [SEEDS[0], SEEDS[0] + " Really.", SEEDS[1]]))
    plot = tmp_path / "nn.png"
    assert stats.main([str(seeds), str(twice), "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    seed_stats, twice_stats = report["files"][str(seeds)], report["files"][str(twice)]
    assert seed_stats["count"] == len(SEEDS)
    assert seed_stats["max_pairwise_similarity"] < 0.6 < twice_stats["max_pairwise_similarity"]
    assert -1 < seed_stats["mean_pairwise_similarity"] < seed_stats["max_pairwise_similarity"]
    assert sum(seed_stats["nearest_neighbour_similarity"]["histogram"]["counts"]) == len(SEEDS)
    assert seed_stats["distinct_2"] > twice_stats["distinct_2"]
    assert plot.stat().st_size > 1000


def test_pool_stats_takes_output_like_every_script(seeds, tmp_path, capsys):
    output = tmp_path / "stats" / "profiles.stats.json"
    assert stats.main([str(seeds), "--output", str(output)]) == 0
    assert json.loads(output.read_text())["files"][str(seeds)]["count"] == len(SEEDS)
    assert output.with_name("profiles.stats.nn_similarity.png").exists()
    assert capsys.readouterr().out.count("\n") == 1


def test_distinct_2_counts_word_bigrams():
    assert stats.distinct_2(["a b a b"]) == pytest.approx(2 / 3)
    assert stats.distinct_2(["a b", "a b"]) == pytest.approx(1 / 2)
