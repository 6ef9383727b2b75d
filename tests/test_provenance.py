"""What provenance records: the API's reported snapshot, a dirty-tree flag, hub revisions."""

from __future__ import annotations

import pytest

from aloe import provenance as provenance_module
from aloe.cache import CachedChatModel, ResponseCache
from aloe.models import ModelOptions, SamplingParams, load_model
from aloe.provenance import provenance

HELLO = [{"role": "user", "content": "hello"}]


def test_the_snapshot_the_api_reports_is_described_for_fresh_and_cached_replies(openai_stub, tmp_path):
    server = openai_stub()
    cache = ResponseCache(tmp_path / "responses.sqlite")
    first = CachedChatModel(load_model("openai:gpt-4o-mini", ModelOptions(base_url=server.base_url)), cache)
    assert "reported_models" not in first.describe()
    first.generate([HELLO], SamplingParams())
    assert first.describe()["reported_models"] == ["gpt-4o-mini-2024-07-18"]
    rerun = CachedChatModel(load_model("openai:gpt-4o-mini", ModelOptions(base_url=server.base_url)), cache)
    assert rerun.generate([HELLO], SamplingParams())[0].cached and len(server.requests) == 1
    assert provenance({}, {"judge": rerun.describe()})["models"]["judge"]["reported_models"] == [
        "gpt-4o-mini-2024-07-18"]


@pytest.mark.parametrize("status, dirty", [(" M aloe/cli.py\n?? notes.txt\n", True), ("", False), (None, None)])
def test_a_dirty_tree_is_flagged_beside_the_commit(monkeypatch, status, dirty):
    assert isinstance(provenance({})["git_dirty"], bool)  # this checkout
    monkeypatch.setattr(provenance_module, "_git", lambda *args: status if args[0] == "status" else "abc\n")
    assert provenance({})["git_dirty"] is dirty


def test_hub_models_get_the_revision_they_were_loaded_at(tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "models--org--tiny-chat"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    models = provenance({}, {"assistant": {"spec": "hf:org/tiny-chat", "path": "org/tiny-chat"},
                             "judge": {"spec": "hf:org/absent", "path": "org/absent"},
                             "user": {"spec": "embedded", "path": str(tmp_path)}})["models"]
    assert models["assistant"]["revision"] == "0123abcd"
    assert "revision" not in models["judge"] and "revision" not in models["user"]
