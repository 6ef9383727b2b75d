"""Persona generation against the OpenAI-compatible stub: a reply writer that invents profiles, seeds, one call."""

from __future__ import annotations

import hashlib
import json
import random

from stage_scripts import run_script

WORDS = ("accountant baker cyclist diver engineer farmer gardener historian illustrator jeweller knitter "
         "librarian mechanic nurse optician plumber quilter rower surgeon tailor violinist welder zoologist "
         "Oslo Lima Kyoto Accra Perth Quito Riga Dakar Hanoi Cork Bern Fez Baku Nice Split Turin Leeds "
         "twins widow cousins grandson stepfather flatmates beagle parrot tortoise ferrets goldfish "
         "chess kayaking pottery karaoke sudoku birdwatching fencing origami bouldering salsa darts "
         "night-shift commute allotment caravan houseboat loft farmhouse bungalow dormitory cabin").split()


def persona_reply(body: dict) -> str:
    """Three distinct made-up profiles, the same for the same request (the seed and prompt pick them)."""
    rng = random.Random(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())
    return "\n".join(f"{n}. " + " ".join(rng.choice(WORDS) for _ in range(30)) + "." for n in (1, 2, 3))


SEEDS = [" ".join(random.Random(f"seed-{n}").choice(WORDS) for _ in range(30)) for n in range(6)]


def write_seeds(path):
    path.write_text("".join(json.dumps(text) + "\n" for text in SEEDS))
    return path


def grow(server, seeds, output, *extra):
    return run_script("persona_generation/generate_personas.py", "--kind", "profile", "--model", "openai:stub",
                      "--base-url", server.base_url, "--seeds", seeds, "--output", output,
                      "--examples-per-prompt", "2", "--per-request", "3", "--requests-per-round", "4",
                      "--threshold", "0.95", "--min-words", "5", *extra)
