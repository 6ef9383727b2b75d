"""Tree-structured conversation generation: pairing, the extractor parser, the record schema, and the
lockstep engine run against a tiny random llama (roles, the tree, retries, failures)."""

import json

import pytest

from aloe.interaction.conversations import (
    ConversationGenerator, GenerationSettings, PersonaPair, RoleModels, is_none_value, pair_personas,
    parse_extraction,
)
from aloe.errors import AloeError
from aloe.models import SamplingParams, load_model
from aloe.models.base import ChatModel, Reply
from aloe.records import Conversation, Persona
from aloe.interaction.simulation import user_simulator_messages

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---------------------------------------------------------------- extractor parsing


@pytest.mark.parametrize("text, profile, personality", [
    ("Profile: I live in Lisbon.\nPersonalities: Warm and chatty.", "I live in Lisbon.", "Warm and chatty."),
    ("Profile: None\nPersonalities: None", None, None),
    ("**Profile:** I keep bees.\n**Personalities:** none yet.", "I keep bees.", None),
    ("Profile: I keep bees. / Personalities: Terse.", "I keep bees.", "Terse."),
    ("Here is what I found.\nProfile:\n- I keep bees.\n- I live in Vermont.\nPersonality: N/A",
     "I keep bees. I live in Vermont.", None),
    ("Inferred profile: I am a nurse\nTraits: dry humour", "I am a nurse", "dry humour"),
    ("Profile: Not evident from the chat.\nPersonalities: Sceptical.", None, "Sceptical."),
])
def test_extractor_output_is_parsed_robustly(text, profile, personality):
    extraction = parse_extraction(text)
    assert extraction.parsed
    assert (extraction.profile, extraction.personality) == (profile, personality)


def test_extractor_junk_is_unparsed_and_means_nothing_inferred():
    extraction = parse_extraction("The user seems nice and likes food.")
    assert not extraction.parsed and extraction.reason
    assert extraction.profile is None and extraction.personality is None


def test_none_values():
    assert all(is_none_value(v) for v in (None, "", "None", "none.", "**None**", "N/A", "Nothing yet", "unknown"))
    assert not any(is_none_value(v) for v in ("Nonna taught me to cook.", "I live in Lisbon."))


# ---------------------------------------------------------------- pairing


def personas(prefix, n):
    return [Persona(id=f"{prefix}{i}", text=f"{prefix} text {i}") for i in range(n)]


def test_pairs_are_distinct_seeded_and_stable_as_n_grows():
    profiles, personalities = personas("prof", 4), personas("pers", 3)
    pairs = pair_personas(profiles, personalities, 12, seed=7)
    keys = {(p.profile.id, p.personality.id) for p in pairs}
    assert len(keys) == 12 and len({p.id for p in pairs}) == 12
    assert pairs == pair_personas(profiles, personalities, 12, seed=7)
    assert pair_personas(profiles, personalities, 5, seed=7) == pairs[:5]
    assert pair_personas(profiles, personalities, 5, seed=8) != pairs[:5]
    with pytest.raises(AloeError, match="12 distinct pairs"):
        pair_personas(profiles, personalities, 13, seed=7)


# ---------------------------------------------------------------- records


def test_a_record_from_the_original_aloe_generator_loads(tmp_path):
    # The original generator wrote exactly these keys: no id, no chosen, no judge, no meta.
    original = {
        "profile": "I am a retired chemistry teacher in Ohio. I garden every morning.",
        "personality": "Patient, curious, likes to explain things step by step.",
        "conversations": [
            {"user": "Morning! My tomatoes finally turned red.",
             "assistant": {"preferred": "That's wonderful! Which variety?", "rejected": "Nice."},
             "inferred_profile": "I garden every morning.", "inferred_personality": "None"},
            {"user": "Brandywines. Took forever.",
             "assistant": {"preferred": "Worth the wait, those are the tastiest.", "rejected": "Ok."},
             "inferred_profile": "I garden every morning.", "inferred_personality": "Patient"},
        ],
    }
    path = tmp_path / "original.jsonl"
    path.write_text(json.dumps(original) + "\n")
    from aloe.jsonl import read_records

    [record] = read_records(path, Conversation)
    assert record.id.startswith("conv-") and record.id == read_records(path, Conversation)[0].id
    assert [t.chosen for t in record.conversations] == [None, None]
    assert record.conversations[0].judge is None and record.meta == {}
    assert record.history_before(1) == [
        {"role": "user", "content": "Morning! My tomatoes finally turned red."},
        {"role": "assistant", "content": "That's wonderful! Which variety?"},
        {"role": "user", "content": "Brandywines. Took forever."},
    ]


# ---------------------------------------------------------------- the engine, with real (tiny) models


class Recording(ChatModel):
    """Passes every call to a real model and keeps what each role was asked."""

    def __init__(self, model, calls):
        self.model, self.calls, self.spec = model, calls, model.spec

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        replies = self.model.generate(conversations, params, sample_indices, on_reply)
        self.calls.append([(list(c), reply.text) for c, reply in zip(conversations, replies)])
        return replies


class ShorterReplyJudge(ChatModel):
    """A rule-based judge with a consistent taste (the shorter reply, by characters), so both orders agree."""

    spec = "rule:shorter"

    def __init__(self):
        self.calls = []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        self.calls.append([list(c) for c in conversations])
        replies = []
        for messages in conversations:
            prompt = messages[-1]["content"]
            a = prompt.split("[Reply A]\n", 1)[1].split("\n[End of reply A]", 1)[0]
            b = prompt.split("[Reply B]\n", 1)[1].split("\n[End of reply B]", 1)[0]
            replies.append(Reply(text="[[A]]" if len(a) <= len(b) else "[[B]]"))
        return replies


class FirstShownJudge(ChatModel):
    """A judge with pure position bias: it always prefers whatever is shown as A."""

    spec = "rule:first-shown"

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        return [Reply(text="[[A]]") for _ in conversations]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(f"hf:{tiny_model_dir}")


def make_pairs(n):
    profiles = [Persona(id=f"prof{i}", text=f"I live in town {i}. I have {i} cats. I love rowing.") for i in range(n)]
    personalities = [Persona(id="pers0", text="Cheerful, curious, talks in short bursts.")]
    return [PersonaPair(f"conv-{i}", profiles[i], personalities[0]) for i in range(n)]


def test_roles_and_the_tree_follow_the_continuing_branch(tiny):
    calls = {role: [] for role in ("user", "extractor", "assistant")}
    judge = ShorterReplyJudge()
    models = RoleModels(user=Recording(tiny, calls["user"]), extractor=Recording(tiny, calls["extractor"]),
                        assistant=Recording(tiny, calls["assistant"]), judge=judge)
    generator = ConversationGenerator(models, SamplingParams(max_new_tokens=8, seed=1),
                                      GenerationSettings(turns=3, continue_rule="random", seed=3))
    finished, failed = [], []
    generator.run(make_pairs(3), finished.append, lambda *a: failed.append(a))
    assert not failed and len(finished) == 3

    # Lockstep: per turn one call per role, the replies as one batch of 2N and the judge as one of 2N.
    assert [len(batch) for batch in calls["user"]] == [3, 3, 3]
    assert [len(batch) for batch in calls["assistant"]] == [6, 6, 6]
    assert [len(batch) for batch in judge.calls] == [6, 6, 6]

    hinted_seen = [(p, text) for batch in calls["assistant"] for p, text in batch if "inferred" in p[0]["content"]]
    plain_seen = [(p, text) for batch in calls["assistant"] for p, text in batch if "inferred" not in p[0]["content"]]
    user_seen = [p for batch in calls["user"] for p, _ in batch]
    chosen = []
    for record in finished:
        assert len(record.conversations) == 3 and record.meta["models"]["judge"] == "rule:shorter"
        for k, turn in enumerate(record.conversations):
            history = record.history_before(k)  # built from `chosen`: the branch the chat continued with
            [hinted_reply] = [text for prompt, text in hinted_seen if prompt[1:] == history]
            [plain_reply] = [text for prompt, text in plain_seen if prompt[1:] == history]
            transcript = history[:-1]
            assert user_simulator_messages(record.profile, record.personality, transcript) in user_seen
            # The judge's label maps back to the right reply: the shorter one wins in both orders.
            judgement = turn.judge
            assert [o.shown for o in judgement.orders] == [["hinted", "plain"], ["plain", "hinted"]]
            other = "rejected" if judgement.hinted == "preferred" else "preferred"
            assert getattr(turn.assistant, judgement.hinted) == hinted_reply
            assert getattr(turn.assistant, other) == plain_reply
            if judgement.outcome == "agree":
                assert len(turn.assistant.preferred) < len(turn.assistant.rejected)
            else:  # equal length: "A" both times is a position bias, a tie resolved as hinted
                assert judgement.outcome == "tie" and turn.assistant.preferred == hinted_reply
            chosen.append(turn.chosen)
    assert set(chosen) == {"preferred", "rejected"}  # --continue random sometimes follows the rejected reply


def test_continue_rules_and_a_skipped_tie(tiny):
    models = RoleModels(user=tiny, extractor=tiny, assistant=tiny, judge=FirstShownJudge())
    finished, failed = [], []
    ConversationGenerator(models, SamplingParams(max_new_tokens=6), GenerationSettings(
        turns=2, continue_rule="rejected", on_tie="hinted")).run(make_pairs(2), finished.append,
                                                                 lambda *a: failed.append(a))
    assert {t.chosen for r in finished for t in r.conversations} == {"rejected"}
    assert {t.judge.outcome for r in finished for t in r.conversations} == {"tie"}
    finished.clear()
    ConversationGenerator(models, SamplingParams(max_new_tokens=6), GenerationSettings(
        turns=2, on_tie="skip")).run(make_pairs(2), finished.append, lambda *a: failed.append(a))
    assert finished == [] and [reason for _, _, reason in failed] == ["skipped: judge tie at turn 1 (--on-tie skip)"] * 2


def test_settings_reject_bad_values():
    with pytest.raises(AloeError, match="turns"):
        GenerationSettings(turns=0)
    with pytest.raises(AloeError, match="--continue"):
        GenerationSettings(continue_rule="sideways")


def test_random_continuation_is_seeded_per_conversation(tiny):
    models = RoleModels(user=tiny, extractor=tiny, assistant=tiny, judge=ShorterReplyJudge())
    runs = []
    for batch in ([0, 1, 2], [2]):  # the same conversation alone or in a batch draws the same branches
        finished = []
        pairs = [make_pairs(3)[i] for i in batch]
        ConversationGenerator(models, SamplingParams(max_new_tokens=4),
                              GenerationSettings(turns=3, seed=5)).run(pairs, finished.append, print)
        runs.append([t.chosen for t in finished[-1].conversations])
    assert runs[0] == runs[1]


class SwitchableJudge(ChatModel):
    """Silent (no verdict) until switched on; then it always picks the plain reply, in either order."""

    spec = "rule:switchable"

    def __init__(self):
        self.speaking, self.sample_indices = False, []

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        self.sample_indices.append(list(sample_indices))
        replies = []
        for messages in conversations:
            prompt = messages[-1]["content"]
            plain_first = prompt.index(PLAIN_MARK) < prompt.index("[Reply B]")
            replies.append(Reply(text=("[[A]]" if plain_first else "[[B]]") if self.speaking else "Both are lovely."))
        return replies


PLAIN_MARK = "PLAIN-REPLY"


class MarkedAssistant(ChatModel):
    """Hinted replies and plain replies that the judge can tell apart."""

    spec = "rule:marked"

    def generate(self, conversations, params, sample_indices=None, on_reply=None):
        return [Reply(text="HINTED-REPLY, sure." if "inferred" in c[0]["content"] else f"{PLAIN_MARK}, fine.")
                for c in conversations]


def test_unparsed_verdicts_are_asked_again_and_relabel_without_changing_the_tree(tiny):
    judge = SwitchableJudge()
    models = RoleModels(user=tiny, extractor=tiny, assistant=MarkedAssistant(), judge=judge)
    settings = GenerationSettings(turns=3, continue_rule="preferred", on_tie="hinted", max_attempts=2)
    generator = ConversationGenerator(models, SamplingParams(max_new_tokens=6), settings)
    finished = []
    generator.run(make_pairs(2), finished.append, print)
    assert {t.judge.outcome for r in finished for t in r.conversations} == {"unparsed"}
    assert {t.assistant.preferred for r in finished for t in r.conversations} == {"HINTED-REPLY, sure."}
    histories = [[r.history_before(k) for k in range(3)] for r in finished]

    judge.speaking, judge.sample_indices = True, []
    assert generator.rejudge(finished) == finished
    # One batch: both orders of 3 turns of 2 conversations, each as the sample after the run's 2 attempts.
    assert judge.sample_indices == [[2] * 12]
    for record, history in zip(finished, histories):
        assert [record.history_before(k) for k in range(3)] == history  # the chat that happened is unchanged
        for turn in record.conversations:
            assert turn.judge.outcome == "agree" and turn.judge.winner == "plain" and turn.judge.rejudged == 1
            assert (turn.assistant.preferred, turn.assistant.rejected) == (f"{PLAIN_MARK}, fine.", "HINTED-REPLY, sure.")
            assert turn.chosen == "rejected" and turn.judge.hinted == "rejected"  # still the hinted reply
            assert all(order.verdict is not None for order in turn.judge.orders)
    assert generator.rejudge(finished) == []  # nothing left to ask
