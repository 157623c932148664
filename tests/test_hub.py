"""`nlpipe push` / `push_run` against a local stand-in for the Hub API (no network).

The stand-in replaces `HfApi.create_repo`, `create_branch` and `create_commit` and writes each
committed file into a local folder, so the tests see exactly what would be uploaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from huggingface_hub import HfApi
from test_export_without_nlpipe import make_run_folder
from typer.testing import CliRunner

import nlpipe.models.rnn_tagger
from nlpipe.cli import app
from nlpipe.errors import NlpipeError
from nlpipe.hub import check_self_contained, export_run, push_command, push_run, shipped_files

FAKE_TOKEN = "hf_FAKEtokenForTestsOnly0123456789abcdef"
EXPECTED_TAGGER_FILES = {
    "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "configuration_rnn_tagger.py", "modeling_rnn_tagger.py", "crf.py", "char_encoder.py", "two_pass_rnn.py",
    "recipe.yaml", "metrics.json", "run_info.json", "train_log.jsonl", "training_curve.png",
}
if (Path(nlpipe.models.rnn_tagger.__file__).parent / "pipeline_rnn_tagger.py").is_file():
    EXPECTED_TAGGER_FILES.add("pipeline_rnn_tagger.py")  # the tagger's own ner pipeline (CRF/char features)


class FakeHub:
    """Records repo creation and writes committed files to ``root/<repo_id>/<revision>/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tokens: set[str | None] = set()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
        hub = self

        def create_repo(api: HfApi, repo_id: str, **kwargs: Any) -> str:
            hub.tokens.add(api.token)
            hub.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(api: HfApi, repo_id: str, **kwargs: Any) -> None:
            hub.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

        def create_commit(api: HfApi, repo_id: str, operations: list[Any], **kwargs: Any) -> Any:
            hub.tokens.add(api.token)
            hub.calls.append(("create_commit", {"repo_id": repo_id, **kwargs}))
            target = hub.root / repo_id / (kwargs.get("revision") or "main")
            for op in operations:
                dest = target / op.path_in_repo
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(Path(op.path_or_fileobj).read_bytes())
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        return self

    def files(self, repo_id: str, revision: str = "main") -> set[str]:
        return set(shipped_files(self.root / repo_id / revision))


@pytest.fixture(scope="module")
def tagger_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_folder("tagger", tmp_path_factory.mktemp("hub") / "run")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return FakeHub(tmp_path / "hub").install(monkeypatch)


def _assert_no_token(folder: Path, *texts: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for text in texts:
        assert FAKE_TOKEN not in text


def test_push_sends_exactly_the_export(tagger_run: Path, hub: FakeHub, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        url = push_run(tagger_run, "me/conll-tiny", private=True, commit_message="first")
    assert url == "https://huggingface.co/me/conll-tiny/commit/0123abc"
    assert hub.files("me/conll-tiny") == EXPECTED_TAGGER_FILES  # no logs/, no checkpoints/
    assert hub.tokens == {FAKE_TOKEN}  # the client got the token from HF_TOKEN ...
    (name, create), (_, commit) = hub.calls
    assert name == "create_repo" and create["private"] is True and create["exist_ok"] is True
    assert commit["commit_message"] == "first" and commit["revision"] is None
    out = capsys.readouterr()
    _assert_no_token(hub.root, caplog.text, out.out, out.err)  # ... and it is nowhere else
    # What was sent is byte for byte a local export for the same repo id.
    local = export_run(tagger_run, tmp_path / "export", repo_id="me/conll-tiny")
    for name in EXPECTED_TAGGER_FILES:
        assert (hub.root / "me/conll-tiny/main" / name).read_bytes() == (local / name).read_bytes(), name
    assert '"me/conll-tiny"' in (local / "README.md").read_text()


def test_push_cli_with_revision(tagger_run: Path, hub: FakeHub) -> None:
    result = CliRunner().invoke(app, ["push", str(tagger_run), "me/conll-tiny", "--revision", "v1",
                                      "--commit-message", "tiny"])
    assert result.exit_code == 0, result.output
    assert "pushed" in result.output and FAKE_TOKEN not in result.output
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "create_commit"]
    assert hub.calls[1][1]["branch"] == "v1" and hub.calls[2][1]["revision"] == "v1"
    assert hub.files("me/conll-tiny", "v1") == EXPECTED_TAGGER_FILES


@pytest.mark.parametrize("repo_id", ["me/bad name", "me/--x", "no-namespace", "a/b/c", ""])
def test_invalid_repo_id(tagger_run: Path, hub: FakeHub, repo_id: str) -> None:
    with pytest.raises(NlpipeError, match="repository id|namespace"):
        push_run(tagger_run, repo_id)
    assert hub.calls == []


def test_no_token(tagger_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login either
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    with pytest.raises(NlpipeError, match="no Hugging Face token: set HF_TOKEN"):
        push_run(tagger_run, "me/conll-tiny")


def test_network_unreachable_keeps_model_and_says_how_to_push_later(
    tagger_run: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(api: HfApi, repo_id: str, **kwargs: Any) -> None:
        raise ConnectionError(f"Name or service not known (while sending {FAKE_TOKEN})")

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    with pytest.raises(NlpipeError) as info:
        push_run(tagger_run, "me/conll-tiny", private=True, revision="v 2")
    message = str(info.value)
    assert "cannot reach the Hugging Face Hub" in message
    assert f"safe on disk at {tagger_run}" in message
    assert push_command(tagger_run, "me/conll-tiny", private=True, revision="v 2") in message
    assert "--private --revision 'v 2'" in message
    assert FAKE_TOKEN not in message and "***" in message
    assert (tagger_run / "model.safetensors").is_file()


def test_real_client_offline_mode_is_reported_as_unreachable(
    tagger_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The unpatched HfApi: with HF_HUB_OFFLINE it refuses before any connection.
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(NlpipeError, match="cannot reach the Hugging Face Hub.*safe on disk"):
        push_run(tagger_run, "me/conll-tiny")


def test_incomplete_run_folder(tmp_path: Path, hub: FakeHub) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(NlpipeError, match="'model.safetensors' is missing"):
        push_run(tmp_path / "run", "me/x")
    with pytest.raises(NlpipeError, match="no such run folder"):
        push_run(tmp_path / "nowhere", "me/x")


def test_export_refuses_code_that_imports_nlpipe(tmp_path: Path) -> None:
    (tmp_path / "modeling_x.py").write_text("import torch\nfrom .configuration_x import XConfig\n")
    check_self_contained(tmp_path)
    (tmp_path / "modeling_y.py").write_text("import torch\nfrom nlpipe.models.crf import CRF\n")
    with pytest.raises(NlpipeError, match=r"modeling_y.py:2: 'from nlpipe.models.crf import CRF'"):
        check_self_contained(tmp_path)


def test_recipe_push_to_hub_checks_before_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nlpipe.run import run_recipe

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(NlpipeError, match="key 'hub.repo_id'"):
        run_recipe("ner-bilstm", ["push_to_hub=true"], data="sample", output_dir=tmp_path / "a")
    with pytest.raises(NlpipeError, match="no Hugging Face token"):
        run_recipe("ner-bilstm", ["push_to_hub=true", "hub.repo_id=me/x"], data="sample", output_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing trained


def test_recipe_run_pushes_at_the_end(hub: FakeHub, tmp_path: Path) -> None:
    from nlpipe.run import run_recipe

    overrides = [
        "push_to_hub=true", "hub.repo_id=me/ner-tiny", "hub.private=true", "train.max_epochs=1",
        "data.max_train_examples=40", "data.max_eval_examples=10", "model.hidden_size=16", "model.embedding_dim=16",
        "model.use_crf=true",
    ]
    result = run_recipe("ner-bilstm", overrides, data="sample", output_dir=tmp_path / "run", progress=False)
    assert hub.calls[0] == ("create_repo", {"repo_id": "me/ner-tiny", "private": True, "exist_ok": True,
                                            "repo_type": "model"})
    sent = hub.files("me/ner-tiny")
    assert {"config.json", "model.safetensors", "modeling_rnn_tagger.py", "README.md", "recipe.yaml"} <= sent
    assert not any(name.startswith(("logs/", "checkpoints/")) for name in sent)
    assert (result.run_dir / "logs").is_dir()  # stays on disk, not shipped
    _assert_no_token(hub.root)
    _assert_no_token(result.run_dir)
