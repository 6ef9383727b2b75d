"""Model specs: registry resolution, short names, and the errors a user sees for a bad spec or key."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from aloe.cli import add_model_args, cli_main, model_pool, role_spec
from aloe.errors import ModelSpecError
from aloe.models import ALIASES, BACKENDS, ModelOptions, ResolvedSpec, load_model, resolve_spec, short_name

KEY_VARIABLES = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "COHERE_API_KEY", "OPENAI_BASE_URL"]


@pytest.fixture
def no_keys(monkeypatch):
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def model_output(tmp_path, monkeypatch):
    root = tmp_path / "model_output"
    (root / "llama3_dpo").mkdir(parents=True)
    monkeypatch.setenv("ALOE_MODEL_OUTPUT", str(root))
    return root


def test_embedded_and_aliases():
    assert resolve_spec("embedded") == ResolvedSpec("embedded", "")
    assert resolve_spec(" embedded ") == ResolvedSpec("embedded", "")
    assert resolve_spec("llama3") == ResolvedSpec("hf", "meta-llama/Meta-Llama-3-8B-Instruct")
    for alias, target in ALIASES.items():
        assert resolve_spec(alias) == ResolvedSpec("hf", target.removeprefix("hf:"))


def test_hf_hub_ids_and_paths(tmp_path):
    assert resolve_spec("hf:Qwen/Qwen2-7B-Instruct") == ResolvedSpec("hf", "Qwen/Qwen2-7B-Instruct")
    assert resolve_spec(f"hf:{tmp_path}") == ResolvedSpec("hf", str(tmp_path))
    assert resolve_spec(str(tmp_path)) == ResolvedSpec("hf", str(tmp_path))  # a bare existing path


def test_names_under_model_output(model_output):
    assert resolve_spec("llama3_dpo") == ResolvedSpec("hf", str(model_output / "llama3_dpo"))
    assert resolve_spec("hf:llama3_dpo") == ResolvedSpec("hf", str(model_output / "llama3_dpo"))


def test_api_specs():
    assert resolve_spec("openai:gpt-4o-mini") == ResolvedSpec("openai", "gpt-4o-mini")
    assert resolve_spec("openai:/models/served/path") == ResolvedSpec("openai", "/models/served/path")
    assert resolve_spec("anthropic:claude-x") == ResolvedSpec("anthropic", "claude-x")
    assert resolve_spec("cohere:command-r") == ResolvedSpec("cohere", "command-r")
    assert set(BACKENDS) == {"embedded", "hf", "openai", "anthropic", "cohere"}


@pytest.mark.parametrize("spec, message", [
    ("gemini:pro", "unknown model spec prefix 'gemini'"),
    ("llama4", "unknown model spec 'llama4'"),
    ("", "empty model spec"),
    ("openai:", "names no model after 'openai:'"),
    ("./no/such/checkpoint", "model path not found: './no/such/checkpoint'"),
    ("/no/such/checkpoint", "model path not found"),
    ("hf:./no/such/checkpoint", "model path not found: './no/such/checkpoint'"),
    ("hf:no-such-name", "model path not found: 'no-such-name'"),
])
def test_bad_specs(spec, message, model_output):
    with pytest.raises(ModelSpecError, match=message.replace(".", r"\.").replace("(", r"\(")):
        resolve_spec(spec)


@pytest.mark.parametrize("spec, variable", [
    ("openai:gpt-4o-mini", "OPENAI_API_KEY"),
    ("anthropic:claude-x", "ANTHROPIC_API_KEY"),
    ("cohere:command-r", "COHERE_API_KEY"),
])
def test_missing_key_names_the_variable(spec, variable, no_keys):
    with pytest.raises(ModelSpecError, match=f"^{spec} needs {variable}: set it in the environment or in .env$"):
        load_model(spec)


def test_openai_compatible_server_needs_no_key(no_keys, monkeypatch):
    model = load_model("openai:served-model", ModelOptions(base_url="http://127.0.0.1:9/v1"))
    assert model.describe() == {"spec": "openai:served-model", "model": "served-model",
                                "base_url": "http://127.0.0.1:9/v1"}
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert load_model("openai:served-model").base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("spec, name", [
    ("embedded", "embedded"),
    ("llama3", "llama3"),
    ("openai:gpt-4o-mini", "gpt-4o-mini"),
    ("anthropic:claude-x", "claude-x"),
    ("hf:Qwen/Qwen2-7B-Instruct", "Qwen2-7B-Instruct"),
    ("model_output/llama3_dpo/", "llama3_dpo"),
    ("llama3_dpo", "llama3_dpo"),
    ("openai:/srv/models/tiny", "tiny"),
    ("openai:ft:gpt-4o:org:x", "ft_gpt-4o_org_x"),
])
def test_short_name(spec, name):
    assert short_name(spec) == name


def test_local_model_without_chat_template(tiny_model_dir, tmp_path):
    plain = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = plain / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))
    with pytest.raises(ModelSpecError, match="has no chat template: use an instruct/chat model"):
        load_model(str(plain))


def test_unloadable_local_checkpoint(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(ModelSpecError, match=f"cannot load model '{broken}'"):
        load_model(str(broken))


@cli_main
def chat_cli(argv=None):
    """The smallest stage-like CLI: the shared model flags, one role, one reply."""
    parser = argparse.ArgumentParser()
    add_model_args(parser, roles=["judge"])
    parser.add_argument("--output", default="runs/x/out.jsonl")
    args = parser.parse_args(argv)
    pool = model_pool(args, args.output)
    reply = pool.get(role_spec(args, "judge")).chat([{"role": "user", "content": "hi"}])
    print(reply.text)


@pytest.mark.parametrize("flags, message", [
    (["--model", "gemini:pro"], "error: unknown model spec prefix 'gemini' in 'gemini:pro'"),
    (["--judge-model", "./missing-model"], "error: model path not found: './missing-model'"),
    (["--model", "anthropic:claude-x"], "error: anthropic:claude-x needs ANTHROPIC_API_KEY"),
    (["--judge-model", "openai:gpt-4o-mini"], "error: openai:gpt-4o-mini needs OPENAI_API_KEY"),
])
def test_cli_reports_bad_specs_in_one_line(flags, message, tmp_path, no_keys, capsys):
    assert chat_cli([*flags, "--output", str(tmp_path / "out.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1


@pytest.mark.parametrize("value, problem", [
    ("sk-test-0123456789\n", "OPENAI_API_KEY ends with a line break"),
    ("sk-test-0123456789\r\n", "OPENAI_API_KEY ends with a line break"),
    (" sk-test-0123456789", "OPENAI_API_KEY has leading or trailing whitespace"),
    ("sk-test–0123456789", "OPENAI_API_KEY contains a non-ASCII or control character at position 8"),
])
def test_a_malformed_key_is_one_line_naming_the_variable_not_a_network_error(value, problem, no_keys, monkeypatch,
                                                                             tmp_path, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", value)
    with pytest.raises(ModelSpecError, match=f"^{problem} .*\\(for openai:gpt-4o-mini\\)"):
        load_model("openai:gpt-4o-mini")
    assert chat_cli(["--model", "openai:gpt-4o-mini", "--output", str(tmp_path / "out.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem}") and err.count("\n") == 1
    assert "0123456789" not in err  # the key never reaches the output


def test_every_role_spec_is_checked_before_any_model_loads(tmp_path, no_keys, monkeypatch, capsys):
    loaded = []
    monkeypatch.setattr("aloe.models.load_model", lambda spec, options=None: loaded.append(spec))

    @cli_main
    def two_roles(argv):
        parser = argparse.ArgumentParser()
        add_model_args(parser, roles=["judge"])
        args = parser.parse_args(argv)
        pool = model_pool(args, tmp_path / "out.jsonl")
        pool.get(args.model)  # the slow one first, as the stages do
        pool.get(role_spec(args, "judge"))

    assert two_roles(["--model", "embedded", "--judge-model", "openai:gpt-4o-mini"]) == 1
    assert capsys.readouterr().err.startswith("error: openai:gpt-4o-mini needs OPENAI_API_KEY")
    assert loaded == []


def test_timeout_flag_reaches_the_api_client(tmp_path, no_keys):
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    args = parser.parse_args(["--model", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "--timeout", "7.5",
                              "--no-cache"])
    model = model_pool(args, tmp_path / "out.jsonl").get("openai:m")
    assert model.timeout_s == 7.5 and model.client.timeout == 7.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--timeout", "0"])
