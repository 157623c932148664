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


# --------------------------------------------------------------------------- what an export may contain

LOAD_WITHOUT_NLPIPE = r'''
import sys
sys.modules["nlpipe"] = None
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline
folder = sys.argv[1]
tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True)
ner = pipeline("ner", model=folder, trust_remote_code=True)
print("LOADED", type(model).__module__, len(ner("Peter works for Siemens in Berlin .")) >= 0)
'''


def test_export_ships_only_what_nlpipe_wrote(tagger_run: Path, tmp_path: Path) -> None:
    """A run folder salted with pickles, stray code, an auto_map naming that code and links to a secret:
    none of it is exported, the export still loads without nlpipe, and the salt's code never runs."""
    import hashlib
    import json
    import os
    import shutil
    import subprocess
    import sys

    run = tmp_path / "run"
    shutil.copytree(tagger_run, run)
    ran = tmp_path / "evil-ran"
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-do-not-ship\n")
    (run / "evil.py").write_text(f"open({str(ran)!r}, 'w').write('pwned')\nclass Evil: pass\n")
    (run / "pytorch_model.bin").write_bytes(b"\x80\x04PICKLE")
    (run / "training_args.bin").write_bytes(b"\x80\x04PICKLE")
    (run / "notes.json").symlink_to(secret)
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to(secret)  # a link in place of a file nlpipe ships
    for name, auto_map in (("tokenizer_config.json", {"AutoTokenizer": ["evil.Evil", None]}),
                           ("config.json", {"AutoConfig": "evil.Evil", "AutoModelForTokenClassification": "evil.Evil"})):
        values = json.loads((run / name).read_text())
        values["auto_map"] = auto_map
        (run / name).write_text(json.dumps(values))
    before = hashlib.sha256(secret.read_bytes()).hexdigest()

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "nlpipe", "export", str(run), str(out)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    left = next(line for line in result.stdout.splitlines() if line.startswith("left out"))
    for name in ("evil.py", "pytorch_model.bin", "training_args.bin", "notes.json (symlink)", "metrics.json (symlink)"):
        assert name in left, left
    names = set(shipped_files(out))
    assert names == EXPECTED_TAGGER_FILES - {"metrics.json"}
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert not any(b"TOPSECRET" in p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert "auto_map" not in json.loads((out / "tokenizer_config.json").read_text())
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]
    assert all(not str(v).startswith("evil") for v in auto_map.values()), auto_map
    assert hashlib.sha256(secret.read_bytes()).hexdigest() == before

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    loaded = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NLPIPE, str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "LOADED transformers_modules." in loaded.stdout
    assert not ran.exists()  # evil.py never ran, neither at export nor at load


def test_export_never_writes_over_other_files(tagger_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("mine\n")
    with pytest.raises(NlpipeError, match="already holds files nlpipe did not write there .thesis.tex."):
        export_run(tagger_run, target)
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]
    with pytest.raises(NlpipeError, match="lies inside the run folder"):
        export_run(tagger_run, tagger_run / "export")
    out = export_run(tagger_run, tmp_path / "export")
    (out / "stale.txt").write_text("from an earlier export\n")
    export_run(tagger_run, out)  # an earlier export is replaced as a whole
    assert set(shipped_files(out)) == EXPECTED_TAGGER_FILES


def test_push_to_an_endpoint_answering_html_is_one_clear_line(tagger_run: Path, tmp_path: Path) -> None:
    """A captive portal or a wrong HF_ENDPOINT answers HTML with status 200: one line, no JSONDecodeError."""
    import os
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Garbage(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            body = b"<html><body>Welcome to the hotel Wi-Fi</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_TOKEN": FAKE_TOKEN,
               "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
        result = subprocess.run([sys.executable, "-m", "nlpipe", "push", str(tagger_run), "me/conll-tiny"],
                                env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "did not answer like the Hugging Face Hub API" in errors[0] and "HF_ENDPOINT" in errors[0]
    assert f"safe on disk at {tagger_run}" in errors[0] and FAKE_TOKEN not in result.stderr
