"""Persona pools without models: parsing replies, reading pools, requests, and the filter's matrix math."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aloe.sentence_embeddings import NoveltyFilter, max_similarity
from aloe.errors import AloeError, RecordError
from aloe.interaction.personas import KINDS, clean_candidate, load_pool, parse_candidates, persona_id, request_messages
from aloe.prompts import fields, render

LONG_A = "A retired nurse in her late sixties who lives in Osaka with her husband and two cats."
LONG_B = "A young father of twins in Lima who drives a taxi at night and studies accounting."
LONG_C = "A beekeeper in rural Wales who sings in a male voice choir and keeps three border collies."


def parse(text, min_words=5, max_words=60, truncated=False):
    return parse_candidates(text, min_words, max_words, truncated)


@pytest.mark.parametrize("marker", ["1.", "1)", "(1)", "1:", "#1", "**1.**", "Profile 1:", "**Profile 1:**", "-", "*", "•"])
def test_parser_accepts_every_list_style(marker):
    lines = [f"{marker.replace('1', str(n))} {text}" for n, text in enumerate([LONG_A, LONG_B, LONG_C], start=1)]
    parsed = parse("Here are three new profiles:\n" + "\n".join(lines) + "\nI hope these help!")
    assert parsed.candidates == [LONG_A, LONG_B, LONG_C]
    assert {reason for _, reason in parsed.dropped} == {"text outside the list"}


def test_parser_blank_line_and_line_separated_replies():
    assert parse(f"{LONG_A}\n\n{LONG_B}\n\n\n{LONG_C}\n").candidates == [LONG_A, LONG_B, LONG_C]
    assert parse(f"{LONG_A}\n{LONG_B}\n{LONG_C}").candidates == [LONG_A, LONG_B, LONG_C]


def test_parser_joins_items_that_wrap_over_lines_and_labels_on_their_own_line():
    wrapped = f"1. {LONG_A[:40]}\n   {LONG_A[40:].strip()}\n2. {LONG_B}"
    assert parse(wrapped).candidates == [" ".join(LONG_A.split()), LONG_B]
    labelled = f"Profile 1:\n{LONG_A}\n\nProfile 2:\n\n{LONG_B}"
    assert parse(labelled).candidates == [LONG_A, LONG_B]


def test_parser_drops_quotes_headers_junk_and_bad_lengths_with_reasons():
    reply = "\n".join([
        "## New profiles",
        f'1. "{LONG_A}"',
        f"2. “{LONG_B}”",
        "3. Too short.",
        "4. " + "word " * 80,
        f"5. {LONG_A}",
        "6. Profiles for older people:",
        f"7. {LONG_C}",
    ])
    parsed = parse(reply)
    assert parsed.candidates == [LONG_A, LONG_B, LONG_C]
    reasons = parsed.reasons()
    assert reasons["too short"] == 1 and reasons["too long"] == 1
    assert reasons["repeated in the same reply"] == 1 and reasons["header"] == 1
    assert reasons["text outside the list"] == 1  # the markdown heading before the list


def test_parser_drops_the_last_item_of_a_reply_cut_off_by_the_token_limit():
    parsed = parse(f"1. {LONG_A}\n2. {LONG_B}\n3. A beekeeper in rural Wales who sings in a", truncated=True)
    assert parsed.candidates == [LONG_A, LONG_B]
    assert parsed.reasons()["cut off by --max-new-tokens"] == 1


def test_parser_on_junk_returns_nothing_without_crashing():
    for junk in ["", "   \n\n", "1.\n2.\n3.", "1. 21. 1.\n2.", "I cannot help with that."]:
        assert parse(junk, KINDS["profile"].min_words, KINDS["profile"].max_words).candidates == []


def test_parser_strips_echoed_double_numbering_but_not_leading_numbers_of_the_text():
    parsed = parse(f"1. 1. {LONG_A}\n\n2. 2. {LONG_B}\n\n3. 45-year-old twins who run a bakery in Porto and swim every morning.")
    assert parsed.candidates == [LONG_A, LONG_B, "45-year-old twins who run a bakery in Porto and swim every morning."]


def test_clean_candidate_keeps_inner_quotes():
    assert clean_candidate('- She calls her grandfather "Opa" at every visit.') == 'She calls her grandfather "Opa" at every visit.'
    assert clean_candidate("'Lives in Oslo.'") == "Lives in Oslo."


def test_load_pool_accepts_records_and_bare_strings(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"id": "a", "text": LONG_A}) + "\n" + json.dumps({"id": "b", "text": LONG_B}) + "\n")
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps(LONG_A) + "\n\n" + json.dumps(LONG_B) + "\n")
    assert [p.id for p in load_pool(records)] == ["a", "b"]
    pool = load_pool(bare)
    assert [p.text for p in pool] == [LONG_A, LONG_B] and all(p.id.startswith("p-") and p.source == "seed" for p in pool)


def test_load_pool_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"id": "a", "text": LONG_A}) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"pool.jsonl:2: record: not valid JSON"):
        load_pool(path)
    path.write_text(json.dumps({"id": "a", "text": ""}) + "\n")
    with pytest.raises(RecordError, match=r"pool.jsonl:1: text:"):
        load_pool(path)
    path.write_text(json.dumps({"id": "a", "text": LONG_A}) + "\n" + json.dumps({"id": "a", "text": LONG_B}) + "\n")
    with pytest.raises(RecordError, match="appears twice"):
        load_pool(path)
    path.write_text("")
    with pytest.raises(RecordError, match="no records"):
        load_pool(path)
    with pytest.raises(RecordError, match="file not found"):
        load_pool(tmp_path / "missing.jsonl")


def test_persona_ids_are_content_hashes():
    assert persona_id("profile", LONG_A) == persona_id("profile", "  " + LONG_A.upper())
    assert persona_id("profile", LONG_A) != persona_id("profile", LONG_B)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_prompts_render_with_examples_and_count(kind):
    assert fields(KINDS[kind].prompt) == {"examples", "count"}
    messages = request_messages(KINDS[kind], [LONG_A, "two\nlines"], 20)
    content = messages[0]["content"]
    assert messages[0]["role"] == "user"
    assert f"1. {LONG_A}" in content and "2. two lines" in content and "20" in content
    assert render(KINDS[kind].prompt, examples="x", count=3).count("{") == 0


def unit_rows(count, dim=16, seed=0):
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_chunked_max_similarity_matches_the_full_product(chunk_rows):
    pool, queries = unit_rows(50), unit_rows(9, seed=1)
    best, where = max_similarity(queries, pool, chunk_rows)
    full = queries @ pool.T
    np.testing.assert_allclose(best, full.max(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(where, full.argmax(axis=1))
    empty_best, empty_where = max_similarity(queries, pool[:0], chunk_rows)
    assert np.isneginf(empty_best).all() and (empty_where == -1).all()


def test_filter_grows_its_matrix_in_place_and_checks_candidates_of_the_same_round():
    novelty = NoveltyFilter(None, threshold=0.6, dim=16, chunk_rows=3, initial_capacity=2)
    pool = unit_rows(5)
    novelty.add_embeddings(pool, [f"seed-{i}" for i in range(5)])
    assert len(novelty) == 5 and novelty.matrix.shape == (5, 16)
    candidates = np.vstack([pool[2], unit_rows(1, seed=7), unit_rows(1, seed=7)])
    decisions = novelty.filter_embeddings(["copy of seed 2", "new", "same as new"], candidates, ["c0", "c1", "c2"])
    assert [d.accepted for d in decisions] == [False, True, False]
    assert decisions[0].nearest == "seed-2" and decisions[0].max_similarity == pytest.approx(1.0, abs=1e-5)
    assert decisions[2].nearest == "c1"
    assert len(novelty) == 6 and novelty.labels[-1] == "c1"
    np.testing.assert_allclose(novelty.matrix[-1], candidates[1])


def test_filter_rejects_thresholds_outside_zero_one():
    for bad in (0, -0.1, 1.01):
        with pytest.raises(AloeError, match="threshold"):
            NoveltyFilter(None, threshold=bad, dim=4)
