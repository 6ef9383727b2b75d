"""Every stage script against every kind of bad input: exit 1, one `error:` line, no traceback, nothing written.

The scripts are found by globbing the stage folders, so a new script is covered as soon as it exists: a script
without an entry in CALLS fails `test_every_script_says_how_to_call_it` until one is added. An entry says how to
call the script with good inputs; every kind of bad input is then made from it, one at a time:

- each input file: missing, empty, binary, non-UTF-8, not JSON (or YAML), the wrong JSON type, a directory,
  duplicate ids (where ids must be unique); folders given as input: missing, empty, a file, binary contents;
- each output: under a regular file, a directory where a file goes (or a file where a folder goes);
- each number the script takes, out of range (on the command line, and for recipes through --config);
- the script's own kinds (an incomplete result for report.py, ...).

A bad input must be noticed before any model loads: loading one fails the test.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from stage_scripts import ROOT, run_script

STAGES = ("persona_generation", "data_generation", "training", "evaluation")
SCRIPTS = sorted(path.relative_to(ROOT).as_posix() for stage in STAGES for path in (ROOT / stage).glob("*.py"))
DATASETS = ROOT / "datasets"

# ------------------------------------------------------------------------------------------- inputs

CONVERSATION = {"id": "conv-1", "profile": "Keeps bees.", "personality": "Dry humour.", "conversations": [
    {"user": "U1", "assistant": {"preferred": "P1", "rejected": "R1"}},
    {"user": "U2", "assistant": {"preferred": "P2", "rejected": "R2"}}]}
PAIR = {"id": "p1", "prompt": "Why?", "chosen": "Because.", "rejected": "No.", "domain": "safety_qa",
        "chosen_persona": "The user is curious.", "rejected_persona": "The user is busy."}
RESPONSE = {"id": "p1", "prompt": "Why?", "response": "Because.", "condition": "The user is curious."}
PROMPT = {"id": "q1", "prompt": "Why is the sky blue?", "system": "Answer in one sentence."}
BENCH_ITEM = json.loads((DATASETS / "multifaceted_bench" / "bench.jsonl").read_text(encoding="utf-8").splitlines()[0])
ROW = {"id": "r1-s0", "system": "Be brief.", "prompt": "Why?", "output": "Because.",
       "preference_set": BENCH_ITEM["preference_set"]}
BENCH_RESPONSE = {**RESPONSE, "id": BENCH_ITEM["id"]}


def _good_result() -> dict:
    from aloe.metrics import alignment_metrics

    return {"benchmark": "aloe", "name": "m", "model": "m", "models": {"model": "m", "user": "u", "judge": "j"},
            "settings": {}, "identity": {}, "settings_hash": "0", "records": "m.records.jsonl", "plot": "m.png",
            "metrics": alignment_metrics([[4, 5]], 2, samples=10)}


GOOD_RESULT = _good_result()
WIN_RATE_RESULT = {"criteria": {"quality": {"a": 1, "b": 1, "tie": 0, "unparsed": 0, "win_rate": 0.5,
                                            "win_rate_ci": None}}}


def jsonl(*records) -> bytes:
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def first_record(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8").splitlines()[0])


@dataclass
class FileFormat:
    """A kind of input file: its good content, and one record of it (for the wrong-type and duplicate cases)."""

    good: bytes
    record: dict | None = None  # None: not JSONL
    unique: bool = True  # ids must be unique (duplicates are an error)
    suffix: str = ".jsonl"
    json_document: bool = False


def _shipped(path: Path, unique: bool = True) -> FileFormat:
    return FileFormat(path.read_bytes(), first_record(path), unique)


FILES = {
    # A pool's ids repeat across shards on purpose (every shard holds the seeds): merging keeps the first.
    "pool": _shipped(DATASETS / "seed_profiles.jsonl", unique=False),
    "personalities": _shipped(DATASETS / "seed_personalities.jsonl", unique=False),
    "conversations": FileFormat(jsonl(CONVERSATION), CONVERSATION),
    "pairs": FileFormat(jsonl(PAIR), PAIR),
    "fewshot": _shipped(DATASETS / "preference_pairs" / "fewshot.jsonl"),
    "responses": FileFormat(jsonl(RESPONSE), RESPONSE),
    "bench responses": FileFormat(jsonl(BENCH_RESPONSE), BENCH_RESPONSE),
    "prompts": FileFormat(jsonl(PROMPT), PROMPT),
    "instructions": _shipped(DATASETS / "instructions" / "instructions.jsonl"),
    "bench": _shipped(DATASETS / "multifaceted_bench" / "bench.jsonl"),
    "rows": FileFormat(jsonl(ROW, {**ROW, "id": "r1-s1", "output": "Since."}), ROW),
    "ultrafeedback": _shipped(DATASETS / "steerable" / "ultrafeedback_sample.jsonl", unique=False),  # no ids
    "result": FileFormat(json.dumps(GOOD_RESULT).encode(), suffix=".json", json_document=True),
    "win-rate result": FileFormat(json.dumps(WIN_RATE_RESULT).encode(), suffix=".json", json_document=True),
    "accuracy result": FileFormat(b'{"accuracy": {}}', suffix=".json", json_document=True),
    "recipe": FileFormat(b"seed: 0\n", suffix=".yaml"),
    "template": FileFormat((ROOT / "training" / "chat_templates" / "mistral_inst.jinja").read_bytes(), suffix=".jinja"),
}

BINARY = bytes(range(256)) * 4
NON_UTF8 = json.dumps({"id": "x", "text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1") + b"\n"


def file_kinds(fmt: FileFormat) -> dict[str, bytes | str | None]:
    """Bad versions of one input file: bytes to write, None for missing, "dir" for a directory."""
    kinds: dict[str, bytes | str | None] = {
        "missing": None, "empty": b"", "binary": BINARY, "non-UTF-8": NON_UTF8, "directory": "dir"}
    if fmt.record is not None or fmt.json_document:
        kinds["not JSON"] = b'{"id": "x", oops\n'
        kinds["wrong JSON type"] = b"[1, 2]\n"
        kinds["a JSON number"] = b"42\n"
    if fmt.suffix == ".yaml":
        kinds["not YAML"] = b"seed: [0\n"
        kinds["wrong YAML type"] = b"- 1\n- 2\n"
    if fmt.record is not None and fmt.unique:
        kinds["duplicate ids"] = jsonl(fmt.record, fmt.record)
    return kinds


# Folders given as input: what each holds when good is made by a fixture; bad versions are made here.
FOLDER_KINDS = ("missing", "empty folder", "a file", "binary contents")

# ------------------------------------------------------------------------------------------- calls


@dataclass
class Call:
    """How to call a script with good inputs. `{name}` in argv is an input or an output placeholder."""

    argv: list[str]
    inputs: dict[str, str] = field(default_factory=dict)  # placeholder -> FILES key, or "folder:<fixture>"
    outputs: dict[str, str] = field(default_factory=dict)  # placeholder -> "file" or "folder"
    numbers: list[tuple[str, str]] = field(default_factory=list)  # (flag, out-of-range value)
    special: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # kind -> (input placeholder, content)
    recipe_numbers: list[tuple[str, object]] = field(default_factory=list)  # (recipe key, out-of-range value)
    mode: str = ""  # names one of several ways to call a script (its case ids carry it)


def calls_of(script: str) -> list[Call]:
    entry = CALLS[script]
    return list(entry) if isinstance(entry, (list, tuple)) else [entry]


SAMPLING = [("--temperature", "-1"), ("--top-p", "0"), ("--top-p", "1.5"), ("--max-new-tokens", "-5"),
            ("--batch-size", "0"), ("--concurrency", "0"), ("--timeout", "0")]
TRAINING = [("--lr", "-1"), ("--lr", "0"), ("--epochs", "0"), ("--epochs", "-1"), ("--batch-size", "0"),
            ("--grad-accum", "0"), ("--warmup", "-1"), ("--lora-dropout", "1.5"), ("--max-steps", "0"),
            ("--max-length", "0"), ("--lora-r", "0"), ("--eval-fraction", "1.5")]
STEERABLE_TINY = ["--hidden", "8", "--heads", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                  "--val-tasks", "2", "--k-min", "1", "--k-max", "2", "--targets", "4", "--no-progress"]
TRAINING_RECIPE = [("lr", -1), ("epochs", 0), ("batch_size", 0)]


def training_call(*extra: str) -> Call:
    return Call([*extra, "--model", "{model}", "--train-data", "{train}", "--eval-data", "{eval}",
                 "--config", "{recipe}", "--chat-template", "{template}", "--output", "{out_dir}"],
                inputs={"train": "conversations", "eval": "conversations", "recipe": "recipe", "template": "template"},
                outputs={"out_dir": "folder"}, numbers=TRAINING, recipe_numbers=TRAINING_RECIPE)


CALLS: dict[str, Call | list[Call]] = {
    "persona_generation/generate_personas.py": Call(
        ["--kind", "profile", "--seeds", "{seeds}", "--target", "3", "--output", "{out}"],
        inputs={"seeds": "pool"}, outputs={"out": "file"},
        numbers=[("--target", "0"), ("--threshold", "0"), ("--threshold", "1.5"), ("--per-request", "0"),
                 ("--min-words", "-1"), *SAMPLING]),
    "persona_generation/merge_pools.py": Call(
        ["{a}", "{b}", "--output", "{out}"], inputs={"a": "pool", "b": "pool"}, outputs={"out": "file"},
        numbers=[("--threshold", "0"), ("--threshold", "2")]),
    "persona_generation/pool_stats.py": Call(
        ["{pool}", "--output", "{out}", "--plot", "{plot}"], inputs={"pool": "pool"},
        outputs={"out": "file", "plot": "file"}),
    "data_generation/build_system_message_pairs.py": Call(
        ["--rows", "{rows}", "--output", "{out}"], inputs={"rows": "rows"}, outputs={"out": "file"}),
    "data_generation/dataset_stats.py": Call(
        ["{conversations}", "--output", "{out}"], inputs={"conversations": "conversations"}, outputs={"out": "file"}),
    "data_generation/generate_conversations.py": Call(
        ["--profiles", "{profiles}", "--personalities", "{personalities}", "--num-conversations", "2",
         "--output", "{out}"],
        inputs={"profiles": "pool", "personalities": "personalities"}, outputs={"out": "file"},
        numbers=[("--num-conversations", "0"), ("--turns", "0"), ("--judge-temperature", "-1"),
                 ("--max-attempts", "0"), ("--group-size", "0"), *SAMPLING]),
    "data_generation/generate_system_messages.py": Call(
        ["--instructions", "{instructions}", "--limit", "1", "--output", "{out}"],
        inputs={"instructions": "instructions"}, outputs={"out": "file"},
        numbers=[("--sets", "0"), ("--limit", "0"), ("--system-max-new-tokens", "-1"), *SAMPLING]),
    "data_generation/infer_personas.py": Call(
        ["--pairs", "{pairs}", "--fewshot", "{fewshot}", "--output", "{out}"],
        inputs={"pairs": "pairs", "fewshot": "fewshot"}, outputs={"out": "file"},
        numbers=[("--shots", "0"), ("--resample-temperature", "-1"), ("--limit", "0"), *SAMPLING]),
    "data_generation/merge.py": Call(
        ["{a}", "{b}", "--output", "{out}"],
        # Merging drops duplicate ids across shards: that is its job, not an error.
        inputs={"a": "conversations", "b": "conversations"}, outputs={"out": "file"}),
    "data_generation/synthetic_preferences.py": [Call(
        ["--kind", "ultrafeedback", "--source", "{source}", "--output", "{out_dir}"],
        inputs={"source": "ultrafeedback"}, outputs={"out_dir": "folder"},
        numbers=[("--pairs", "0"), ("--conflicting-share", "1.5"), ("--conflicting-share", "-0.5"),
                 ("--min-pairs", "0")]), Call(
        ["--kind", "aloe", "--conversations", "{conversations}", "--output", "{out_dir}"],
        inputs={"conversations": "conversations"}, mode="aloe")],
    "training/sft.py": training_call("--data", "preferred"),
    "training/dpo.py": training_call(),
    "training/orpo.py": training_call(),
    "training/reward_model.py": training_call(),
    "training/np_dpo.py": Call(
        ["--data", "{data}", "--model", "{model}", "--output", "{out_dir}"],
        inputs={"data": "folder:steerable_text_data"}, outputs={"out_dir": "folder"},
        numbers=[("--lr", "-1"), ("--steps", "0"), ("--beta", "0"), ("--beta", "-1"), ("--k-min", "-1"),
                 ("--k-max", "-1"), ("--max-length", "0")]),
    "training/steerable_reward.py": Call(
        ["--data", "{data}", "--output", "{out_dir}", *STEERABLE_TINY],
        inputs={"data": "folder:steerable_data"}, outputs={"out_dir": "folder"},
        numbers=[("--lr", "-1"), ("--lr", "0"), ("--epochs", "0"), ("--batch-size", "0"), ("--k-min", "-1"),
                 ("--k-max", "0"), ("--targets", "0")]),
    "evaluation/best_of_n.py": Call(
        ["--reward-model", "{reward_model}", "--prompts", "{prompts}", "--output", "{out}"],
        inputs={"reward_model": "folder:reward_model", "prompts": "prompts"}, outputs={"out": "file"},
        numbers=[("--n", "0"), ("--reward-batch-size", "0"), ("--limit", "0"), *SAMPLING]),
    "evaluation/eval_aloe.py": Call(
        ["--profiles", "{profiles}", "--personalities", "{personalities}", "--output", "{out}"],
        inputs={"profiles": "pool", "personalities": "personalities"}, outputs={"out": "file"},
        numbers=[("--turns", "0"), ("--limit", "0"), ("--bootstrap", "-5"), ("--user-temperature", "-1"),
                 ("--judge-temperature", "-1"), ("--user-max-new-tokens", "0"), *SAMPLING]),
    "evaluation/eval_multifaceted.py": Call(
        ["--bench", "{bench}", "--responses", "{responses}", "--limit", "1", "--output", "{out}"],
        inputs={"bench": "bench", "responses": "bench responses"}, outputs={"out": "file"},
        numbers=[("--runs", "0"), ("--bootstrap", "-5"), ("--judge-temperature", "-1"), ("--limit", "0"),
                 *SAMPLING]),
    "evaluation/eval_steerable.py": Call(
        ["{checkpoint}", "--data", "{data}", "--k", "1", "--targets", "4", "--tasks", "2", "--output", "{out}"],
        inputs={"checkpoint": "folder:steerable_checkpoint", "data": "folder:steerable_data"},
        outputs={"out": "file"},
        numbers=[("--k", "-1"), ("--tasks", "0"), ("--targets", "0")]),
    "evaluation/generate_responses.py": [Call(
        ["--prompts", "{prompts}", "--output", "{out}"], inputs={"prompts": "prompts"}, outputs={"out": "file"},
        numbers=[("--limit", "0"), ("--group-size", "0"), *SAMPLING]), Call(
        ["--pairs", "{pairs}", "--persona", "retr-chosen", "--train-pairs", "{train_pairs}", "--output", "{out}"],
        inputs={"pairs": "pairs", "train_pairs": "pairs"}, mode="personas")],
    "evaluation/persona_accuracy.py": [Call(
        ["--pairs", "{pairs}", "--output", "{out}"], inputs={"pairs": "pairs"}, outputs={"out": "file"},
        numbers=[("--bootstrap", "-5"), ("--min-count", "0"), ("--top", "0"), *SAMPLING]), Call(
        ["--report", "{result}"], inputs={"result": "accuracy result"}, mode="report",
        special={"incomplete result": ("result", b'{"accuracy": {"all": {"chosen": {}}}}')})],
    "evaluation/report.py": Call(
        ["{result}", "--output", "{out}"], inputs={"result": "result"}, outputs={"out": "file"},
        special={"incomplete result": ("result", b'{"benchmark": "aloe", "model": "x"}\n'),
                 "half a result": ("result", json.dumps(GOOD_RESULT).encode()[:200]),
                 "a result without figures": ("result", json.dumps({**GOOD_RESULT, "metrics": {}}).encode()),
                 "a result with figures of the wrong type": ("result", json.dumps(
                     {**GOOD_RESULT, "metrics": {**GOOD_RESULT["metrics"], "per_turn": "high"}}).encode()),
                 "a Multifaceted result with metrics of the wrong type": (
                     "result", b'{"benchmark": "multifaceted", "name": "x", "metrics": [1]}\n')}),
    "evaluation/win_rate.py": [Call(
        ["{a}", "{b}", "--output", "{out}"], inputs={"a": "responses", "b": "responses"}, outputs={"out": "file"},
        numbers=[("--bootstrap", "-5"), *SAMPLING]), Call(
        ["--report", "{result}"], inputs={"result": "win-rate result"}, mode="report",
        special={"incomplete result": ("result", b'{"criteria": {"quality": {"a": 1}}}'),
                 "criteria of the wrong type": ("result", b'{"criteria": [1]}')})],
}


def test_every_script_says_how_to_call_it():
    missing = [script for script in SCRIPTS if script not in CALLS]
    assert not missing, f"add an entry to CALLS in {__file__} for: {', '.join(missing)}"
    stale = [script for script in CALLS if script not in SCRIPTS]
    assert not stale, f"CALLS names scripts that no longer exist: {', '.join(stale)}"


# ------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    script: str
    kind: str
    target: str = ""  # the placeholder (or flag) the kind applies to
    value: object = None
    mode: int = 0  # which of the script's calls

    @property
    def call(self) -> Call:
        return calls_of(self.script)[self.mode]

    @property
    def id(self) -> str:
        name = self.script.split("/")[-1].removesuffix(".py")
        if self.call.mode:
            name += f"[{self.call.mode}]"
        detail = f"{self.target}={self.value}" if self.kind in ("number", "recipe number") else self.target
        return f"{name}-{self.kind}-{detail}".replace(" ", "_")


def cases() -> list[Case]:
    found = []
    for script in SCRIPTS:
        if script not in CALLS:
            continue
        for mode, call in enumerate(calls_of(script)):
            kinds = []
            for name, fmt in call.inputs.items():
                bad = FOLDER_KINDS if fmt.startswith("folder:") else file_kinds(FILES[fmt])
                kinds += [(kind, name, None) for kind in bad]
            for name, what in call.outputs.items():
                bad = ("output under a file", "a directory as the output file" if what == "file" else
                       "a file as the output folder")
                kinds += [(kind, name, None) for kind in bad]
            kinds += [("number", flag, value) for flag, value in call.numbers]
            kinds += [("recipe number", key, value) for key, value in call.recipe_numbers]
            kinds += [(kind, target, None) for kind, (target, _) in call.special.items()]
            found += [Case(script, kind, target, value, mode) for kind, target, value in kinds]
    return found


CASES = cases()


class ModelLoaded(BaseException):
    """Raised by the guard when a script loads model weights before noticing its bad input."""


def refuse_model_loading(monkeypatch) -> None:
    import transformers

    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the bad input was noticed")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


@pytest.fixture(scope="module")
def steerable_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("steerable") / "data"
    assert run_script("data_generation/synthetic_preferences.py", "--kind", "scalar", "--pairs", "200",
                      "--output", path) == 0
    return path


@pytest.fixture(scope="module")
def steerable_checkpoint(steerable_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "btl"
    assert run_script("training/steerable_reward.py", "--data", steerable_data, "--output", path, *STEERABLE_TINY) == 0
    return path


@pytest.fixture(scope="module")
def steerable_text_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("steerable-text") / "data"
    assert run_script("data_generation/synthetic_preferences.py", "--kind", "ultrafeedback", "--output", path) == 0
    return path


@pytest.fixture(scope="module")
def reward_model(tiny_model_dir, tmp_path_factory):
    """A folder that reads as a reward model (its weights are never loaded here)."""
    path = tmp_path_factory.mktemp("reward") / "model"
    shutil.copytree(tiny_model_dir, path)
    config = json.loads((path / "config.json").read_text())
    config.update(architectures=["LlamaForSequenceClassification"], num_labels=1,
                  id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    (path / "config.json").write_text(json.dumps(config))
    return path


def make_folder_input(path: Path, kind: str | None, good: Path) -> None:
    """A folder input: good (a copy of `good`) or one of FOLDER_KINDS."""
    if kind == "missing":
        return
    if kind == "empty folder":
        path.mkdir(parents=True)
    elif kind == "a file":
        path.write_bytes(b'{"a": 1}\n')
    else:
        shutil.copytree(good, path)
        if kind == "binary contents":
            for file in path.rglob("*"):
                if file.is_file():
                    file.write_bytes(BINARY)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_and_exit_1(case, tmp_path, request, capsys, monkeypatch, tiny_model_dir):
    call = case.call
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    values = {"model": str(tiny_model_dir), "out": str(outputs / "out.json"), "out_dir": str(outputs / "out_dir")}
    expect = []  # what the error line must name
    for name, fmt in call.inputs.items():
        if fmt.startswith("folder:"):
            path = inputs / name
            good = request.getfixturevalue(fmt.split(":")[1])
            make_folder_input(path, case.kind if case.target == name else None, good)
        else:
            file_format = FILES[fmt]
            path = inputs / f"{name}{file_format.suffix}"
            content = file_format.good
            if case.target == name and case.kind in call.special:
                content = call.special[case.kind][1]
            elif case.target == name:
                content = file_kinds(file_format)[case.kind]
            if content == "dir":
                path.mkdir()
            elif content is not None:
                path.write_bytes(content)
        if case.target == name:
            expect.append(path.name)
        values[name] = str(path)

    blocker = tmp_path / "blocker.txt"  # a regular file an output is put under
    blocker.write_text("keep me\n")
    for name, what in call.outputs.items():
        path = outputs / (f"{name}.json" if what == "file" else name)
        if case.target == name:
            if case.kind == "output under a file":
                path = blocker / path.name
            elif case.kind == "a directory as the output file":
                path.mkdir(parents=True)
            elif case.kind == "a file as the output folder":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("keep me\n")
            expect.append(path.name)
        values[name] = str(path)

    argv = [part.format(**values) for part in call.argv]
    if case.kind == "number":
        argv += [case.target, str(case.value)]
        expect += [case.target, case.target.lstrip("-")]
    elif case.kind == "recipe number":
        recipe = Path(values["recipe"])
        recipe.write_text(f"{case.target}: {case.value}\n")
        expect.append(case.target)
    before = snapshot(tmp_path)
    capsys.readouterr()
    refuse_model_loading(monkeypatch)

    code = run_script(case.script, *argv)

    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert code == 1, f"exit {code} (a silent success or the wrong status); stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert any(needle in lines[0] for needle in expect), f"the error does not name {expect}: {lines[0]}"
    assert snapshot(tmp_path) == before, "a failed run wrote or changed files"
