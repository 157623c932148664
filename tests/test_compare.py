"""`nlpipe compare`: the report's numbers are the runs' metrics.json numbers, plots are real PNGs."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from nlpipe.compare import MISSING, TABLE_COLUMNS, compare_runs, load_run_summary, matching_recipes
from nlpipe.errors import NlpipeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_run(folder: Path, *, task: str, model: dict, metric: str, test: dict, params: int, wall: float,
              tps: float, curve: list[tuple[int, float]], peak: float | None = None) -> Path:
    """A run folder with the files compare reads, holding distinctive numbers."""
    folder.mkdir(parents=True)
    metrics = {"validation": {k: v - 5 for k, v in test.items()}, "test": test, "parameters": params, "selection_metric": metric,
               "train": {"wall_s": wall, "tokens": 1000, "tokens_per_s": tps, "steps": 10}}
    if peak is not None:
        metrics["peak_memory_mb"] = peak
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run_info.json").write_text(json.dumps({"recipe": folder.name, "task": task, "machine": "CPU test"}))
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": folder.name, "task": task, "model": model,
                                                        "eval": {"metric": metric}}))
    with open(folder / "train_log.jsonl", "w") as handle:
        for step, value in curve:
            handle.write(json.dumps({"step": step, "split": "validation", metric: value}) + "\n")
            handle.write(json.dumps({"step": step, "loss": 1.0}) + "\n")
    return folder


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """One tiny NER run on sample data, shared by the module."""
    from nlpipe.run import run_recipe

    out = tmp_path_factory.mktemp("runs") / "ner-tiny"
    run_recipe("ner-bilstm", ["train.max_steps=4", "train.eval_every_steps=2", "data.max_train_examples=40",
                              "data.max_eval_examples=20", "model.hidden_size=16", "model.embedding_dim=8",
                              "train.batch_size=8"], data="sample", output_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("fake")
    return [
        _fake_run(root / "ner-a", task="token-classification", model={"type": "rnn_tagger", "cell": "lstm",
                  "bidirectional": True}, metric="f1", test={"f1": 87.654, "precision": 80.0}, params=12345,
                  wall=61.25, tps=2345.6, curve=[(10, 50.0), (20, 70.5)], peak=812.3),
        _fake_run(root / "ner-b", task="token-classification", model={"type": "rnn_tagger", "cell": "gru"},
                  metric="f1", test={"f1": 83.111}, params=9999, wall=42.0, tps=3100.0, curve=[(10, 40.0)]),
        _fake_run(root / "mt-a", task="translation", model={"type": "rnn_seq2seq", "attention": "additive"},
                  metric="sacrebleu", test={"sacrebleu": 21.337, "sacrebleu_len_1-10": 30.5,
                                            "sacrebleu_len_11-20": 20.25, "sacrebleu_len_21+": 9.75},
                  params=500000, wall=300.0, tps=900.0, curve=[(5, 10.0), (10, 18.0)]),
        _fake_run(root / "mt-b", task="translation", model={"type": "rnn_seq2seq", "attention": "none"},
                  metric="sacrebleu", test={"sacrebleu": 12.5, "sacrebleu_len_1-10": 25.0,
                                            "sacrebleu_len_11-20": 10.0, "sacrebleu_len_21+": 2.0},
                  params=450000, wall=250.0, tps=1000.0, curve=[(5, 5.0), (10, 11.0)]),
    ]


def _markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Parse the report: task heading → rows as {column: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    task = None
    header: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            task, header = line[3:].strip(), None
        elif line.startswith("### ") and task is not None:
            # The per-run table is under "### runs" (keyed by the task); others by "task/section".
            section = line[4:].strip()
            task, header = (task.split("/")[0] if section == "runs" else f"{task.split('/')[0]}/{section}"), None
        elif line.startswith("| ") and task is not None:
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header = cells
            else:
                tables.setdefault(task, []).append(dict(zip(header, cells, strict=True)))
    return tables


class _HtmlTables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def _expected(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_report_numbers_equal_metrics_json(fake_runs, real_run, tmp_path):
    report = compare_runs([*fake_runs, real_run], tmp_path / "report")
    tables = {k: v for k, v in _markdown_tables(report.markdown.read_text()).items() if "/" not in k}
    assert set(tables) == {"token-classification", "translation"}
    rows = {row["run"]: row for table in tables.values() for row in table}
    assert set(rows) == {"ner-a", "ner-b", "mt-a", "mt-b", real_run.name}
    for run_dir in [*fake_runs, real_run]:
        metrics, row = _expected(run_dir), rows[run_dir.name]
        metric = metrics["selection_metric"]
        assert _number(row["score"]) == pytest.approx(metrics["test"][metric], abs=0.005)
        assert row["metric"] == f"{metric} (test)"
        assert _number(row["parameters"]) == metrics["parameters"]
        assert _number(row["train wall time (s)"]) == pytest.approx(metrics["train"]["wall_s"], abs=0.05)
        assert _number(row["tokens/s"]) == pytest.approx(metrics["train"]["tokens_per_s"], abs=0.5)
        if "peak_memory_mb" in metrics:
            assert _number(row["peak memory (MB)"]) == pytest.approx(metrics["peak_memory_mb"], abs=0.5)
        else:
            assert row["peak memory (MB)"] == MISSING
    assert rows["ner-a"]["model type"] == "rnn_tagger (lstm, bi)"
    assert rows["mt-b"]["model type"] == "rnn_seq2seq (none)"
    assert rows[real_run.name]["recipe"] == "ner-bilstm"
    # Grouping: the translation table holds exactly the translation runs.
    assert {r["run"] for r in tables["translation"]} == {"mt-a", "mt-b"}

    # The HTML table holds the same cells as the Markdown one.
    parser = _HtmlTables()
    parser.feed(report.html.read_text())
    # (the per-run tables; the leaderboard tables above them have other columns)
    html_rows = {row[0]: dict(zip(TABLE_COLUMNS, row, strict=True)) for row in parser.rows
                 if len(row) == len(TABLE_COLUMNS) and row[0] in rows}
    assert html_rows == rows


def test_plots_are_real_pngs_and_inlined(fake_runs, tmp_path):
    report = compare_runs(fake_runs, tmp_path / "report")
    names = {p.name for p in report.figures}
    # The length-bucket plot exists only for the task whose metrics have bucket keys.
    assert "translation-score-by-length.png" in names
    assert "token-classification-score-by-length.png" not in names
    for task in ("translation", "token-classification"):
        for kind in ("score-vs-parameters", "score-vs-time", "learning-curves"):
            assert f"{task}-{kind}.png" in names
    import matplotlib.image

    for path in report.figures:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert matplotlib.image.imread(path).ndim == 3
        assert f"]({path.name})" in report.markdown.read_text()
    parser = _HtmlTables()
    parser.feed(report.html.read_text())
    assert len(parser.images) == len(report.figures)
    inlined = {base64.b64decode(src.split(",", 1)[1]) for src in parser.images}
    assert inlined == {p.read_bytes() for p in report.figures}
    assert "src=\"report" not in report.html.read_text()  # nothing linked from outside


def test_summary_reads_curves_and_buckets(fake_runs):
    summary = load_run_summary(fake_runs[2])
    assert summary.curve == [(5, 10.0), (10, 18.0)]
    assert summary.buckets == {"1-10": 30.5, "11-20": 20.25, "21+": 9.75}
    assert summary.task == "translation" and summary.metric == "sacrebleu"


def test_summarization_table_shows_rouge_lsum_for_runs_selecting_on_rouge_l(tmp_path):
    # Published SAMSum results are summary-level ROUGE-L: the table shows rougeLsum and says so.
    run = _fake_run(tmp_path / "sum-a", task="summarization", model={"type": "rnn_seq2seq"}, metric="rougeL",
                    test={"rougeL": 21.1, "rougeLsum": 22.69, "rouge1": 24.7}, params=10, wall=1.0, tps=1.0,
                    curve=[(5, 20.0)])
    old = _fake_run(tmp_path / "sum-old", task="summarization", model={"type": "rnn_seq2seq"}, metric="rougeL",
                    test={"rougeL": 19.5}, params=10, wall=1.0, tps=1.0, curve=[(5, 18.0)])
    assert load_run_summary(run).metric == "rougeLsum" and load_run_summary(run).score == pytest.approx(22.69)
    assert load_run_summary(run).curve == [(5, 20.0)]  # the log has only rougeL: the curve falls back to it
    assert load_run_summary(old).metric == "rougeL"  # an older run without rougeLsum keeps its figure
    text = compare_runs([run, old], tmp_path / "report").markdown.read_text()
    rows = {row["run"]: row for row in _markdown_tables(text)["summarization"]}
    assert rows["sum-a"]["score"] == "22.69" and rows["sum-a"]["metric"] == "rougeLsum (test)"
    assert rows["sum-old"]["score"] == "19.50"
    assert "`rougeLsum` is shown for runs that select on `rougeL`" in text


def test_errors_name_the_problem(tmp_path, fake_runs):
    with pytest.raises(NlpipeError, match="no such run folder"):
        compare_runs([tmp_path / "missing"], tmp_path / "r")
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(NlpipeError, match="'metrics.json' is missing"):
        compare_runs([tmp_path / "unfinished"], tmp_path / "r")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    with pytest.raises(NlpipeError, match=r"metrics.json: line 1"):
        load_run_summary(broken)
    with pytest.raises(NlpipeError, match="nothing to compare"):
        compare_runs([], tmp_path / "r")
    with pytest.raises(NlpipeError, match="no recipe matches"):
        matching_recipes("no-such-*")
    assert "ner-bilstm" in matching_recipes("ner-*")


def test_cli_compare(fake_runs, tmp_path):
    from typer.testing import CliRunner

    from nlpipe.cli import app

    result = CliRunner().invoke(app, ["compare", *map(str, fake_runs[:2]), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "2 runs" in result.output and (tmp_path / "rep" / "report.html").is_file()


def test_recipes_are_run_then_compared_with_peak_memory(tmp_path, monkeypatch):
    """`--recipes` runs each recipe in a fresh process, records its max RSS, and reports it."""
    from nlpipe.compare import compare_recipes

    monkeypatch.setenv("NLPIPE_CACHE", str(tmp_path / "cache"))
    report = compare_recipes(
        "ner-bilstm", tmp_path / "rep", data="sample", runs_dir=tmp_path / "runs",
        overrides=["train.max_steps=2", "train.eval_every_steps=2", "data.max_train_examples=16",
                   "data.max_eval_examples=8", "model.hidden_size=16", "model.embedding_dim=8", "train.batch_size=8"],
    )
    metrics = _expected(tmp_path / "runs" / "ner-bilstm")
    # A Python process with torch loaded holds well over 50 MB; a unit slip (KiB vs MB) would break this.
    assert 50 < metrics["peak_memory_mb"] < 64_000
    row = _markdown_tables(report.markdown.read_text())["token-classification"][0]
    assert _number(row["peak memory (MB)"]) == pytest.approx(metrics["peak_memory_mb"], abs=0.5)


def test_table_names_the_data_used_and_processes_apart_from_the_device(tmp_path: Path) -> None:
    """A sample run is not shown as a conll2003 result, and a 2-process run is not '1 threads'."""
    run = _fake_run(tmp_path / "ddp", task="token-classification", model={"type": "rnn_tagger"}, metric="f1",
                    test={"f1": 50.0}, params=10, wall=1.0, tps=1.0, curve=[(1, 1.0)])
    (run / "run_info.json").write_text(json.dumps({
        "recipe": "ddp", "task": "token-classification", "dataset": "conll2003", "data": {"source": "sample"},
        "machine": "CPU Intel Xeon, 1 threads", "num_processes": 2}))
    summary = load_run_summary(run)
    assert summary.data == "nlpipe built-in sample (synthetic, conll2003 format; not conll2003)"
    assert (summary.processes, summary.device) == ("2 × 1 thread", "CPU Intel Xeon")
    report = compare_runs([run], tmp_path / "report")
    (row,) = _markdown_tables(report.markdown.read_text())["token-classification"]
    assert row["data"] == summary.data and row["processes"] == "2 × 1 thread" and row["device"] == "CPU Intel Xeon"
    # metrics.json's own record wins (what run_recipe writes now).
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["data"] = {"dataset": "conll2003", "source": "dir", "description": "conll2003 (local files)"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert load_run_summary(run).data == "conll2003 (local files)"


def test_real_run_records_its_data_in_metrics(real_run: Path) -> None:
    metrics = json.loads((real_run / "metrics.json").read_text())
    assert metrics["data"]["source"] == "sample" and metrics["data"]["dataset"] == "conll2003"
    assert "not conll2003" in metrics["data"]["description"]


def test_length_buckets_are_labelled_as_people_write_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from nlpipe.compare import bucket_label

    assert [bucket_label(b) for b in ("01_10", "11_20", "21_plus", "1-10", "21+", "short")] == \
        ["1–10", "11–20", "21+", "1–10", "21+", "short"]
    run = _fake_run(tmp_path / "mt", task="translation", model={"type": "rnn_seq2seq"}, metric="sacrebleu",
                    test={"sacrebleu": 20.0, "sacrebleu_len_01_10": 30.0, "sacrebleu_len_11_20": 20.0,
                          "sacrebleu_len_21_plus": 10.0}, params=1, wall=1.0, tps=1.0, curve=[(1, 1.0)])
    labels = {}
    original = Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        if str(path).endswith("score-by-length.png"):
            labels["x"] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        return original(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    compare_runs([run], tmp_path / "report")
    assert labels["x"] == ["1–10", "11–20", "21+"]


def test_leaderboard_aggregates_seeds_as_mean_and_sample_sd(tmp_path):
    """Three seeds of one recipe → one entry: mean and sample sd by hand; the budget curve in tokens."""

    runs = []
    for seed, f1, curve in [(42, 80.0, [(10, 50.0), (20, 70.0)]), (43, 82.0, [(10, 52.0), (20, 74.0)]),
                            (44, 87.0, [(10, 54.0), (20, 72.0)])]:
        folder = _fake_run(tmp_path / f"ner-x-seed{seed}", task="token-classification",
                           model={"type": "rnn_tagger", "cell": "lstm"}, metric="f1", test={"f1": f1},
                           params=100, wall=10.0, tps=1000.0 + seed, curve=curve, peak=500.0 + seed)
        info = json.loads((folder / "run_info.json").read_text())
        (folder / "run_info.json").write_text(json.dumps({**info, "recipe": "ner-x"}))
        runs.append(folder)
    other = _fake_run(tmp_path / "ner-y", task="token-classification", model={"type": "bert"}, metric="f1",
                      test={"f1": 90.0}, params=7, wall=1.0, tps=5.0, curve=[(10, 60.0)])
    report = compare_runs([*runs, other], tmp_path / "rep")
    board = json.loads((tmp_path / "rep" / "leaderboard.json").read_text())["token-classification"]
    assert [e["recipe"] for e in board] == ["ner-y", "ner-x"]  # best mean first
    x = board[1]
    # By hand: mean (80 + 82 + 87) / 3 = 83; sample sd sqrt(((-3)² + (-1)² + 4²) / 2) = sqrt(13).
    assert x["mean"] == pytest.approx(83.0)
    assert x["spread"] == pytest.approx(13 ** 0.5)
    assert board[0]["spread"] is None  # one seed: no spread
    assert x["tokens_per_s"] == pytest.approx(1043.0)  # mean of 1042, 1043, 1044
    assert x["peak_memory_mb"] == pytest.approx(544.0)  # the largest
    # _fake_run: 1000 tokens in 10 steps → 100 tokens per step; validation mean over seeds at each step.
    assert [tuple(p) for p in x["curve"]] == [(1000.0, 52.0, 50.0, 54.0), (2000.0, 72.0, 70.0, 74.0)]
    row = _markdown_tables(report.markdown.read_text())["token-classification/leaderboard"][1]
    assert row["recipe"] == "ner-x" and row["seeds"] == "3"
    assert row["score (mean ± sd)"] == f"83.00 ± {13 ** 0.5:.2f}"
    assert (tmp_path / "rep" / "token-classification-quality-vs-budget.png").read_bytes().startswith(PNG_MAGIC)


def test_equal_budget_overrides_switch_off_early_stops_unless_set():
    from nlpipe.compare import equal_budget_overrides

    assert equal_budget_overrides(["train.max_steps=3"]) == []  # no budget: recipes stay as written
    assert equal_budget_overrides(["train.budget.tokens=500", "train.max_steps=9"]) == [
        "train.max_train_minutes=null", "train.early_stopping_patience=null"]


def test_recipes_under_one_budget_with_seeds(tmp_path, monkeypatch):
    """Two recipes × two seeds under one tokens budget: every run spends it; the leaderboard is their mean."""
    import statistics

    from nlpipe.compare import compare_recipes

    monkeypatch.setenv("NLPIPE_CACHE", str(tmp_path / "cache"))
    overrides = ["train.budget.tokens=300", "train.eval_every_steps=2", "data.max_train_examples=24",
                 "data.max_eval_examples=8", "model.hidden_size=8", "model.embedding_dim=8", "train.batch_size=8"]
    report = compare_recipes("ner-gru,ner-lstm", tmp_path / "rep", data="sample", runs_dir=tmp_path / "runs",
                             overrides=overrides, seeds=2)
    board = {e["recipe"]: e for e in json.loads((tmp_path / "rep" / "leaderboard.json").read_text())[
        "token-classification"]}
    assert set(board) == {"ner-gru", "ner-lstm"}
    for name in board:
        metrics = [_expected(tmp_path / "runs" / f"{name}-seed{seed}") for seed in (42, 43)]
        for m in metrics:
            assert m["train"]["stopped_because"] == "budget"
            assert m["train"]["tokens"] >= 300
            assert m["eval_speed"]["test"]["examples_per_s"] > 0
        scores = [m["test"]["f1"] for m in metrics]
        assert board[name]["mean"] == pytest.approx(statistics.mean(scores))
        assert board[name]["spread"] == pytest.approx(statistics.stdev(scores))
        assert board[name]["eval_examples_per_s"] == pytest.approx(
            statistics.mean(m["eval_speed"]["test"]["examples_per_s"] for m in metrics))
        run_recipe = yaml.safe_load((tmp_path / "runs" / f"{name}-seed43" / "recipe.yaml").read_text())
        assert run_recipe["train"]["seed"] == 43
        assert run_recipe["train"]["early_stopping_patience"] is None
        assert run_recipe["train"]["max_train_minutes"] is None
    assert "Equal budget" in report.markdown.read_text()


def test_report_warns_when_warm_up_eats_the_budget(tmp_path):
    run = _fake_run(tmp_path / "ner-t", task="token-classification", model={"type": "bert"}, metric="f1",
                    test={"f1": 1.0}, params=1, wall=1.0, tps=1.0, curve=[])
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["train"]["budget"] = {"tokens": 1000, "planned_steps": 60}
    (run / "metrics.json").write_text(json.dumps(metrics))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    (run / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "train": {"warmup_steps": 500}}))
    text = compare_runs([run], tmp_path / "rep").markdown.read_text()
    assert "warms up for 500 steps of the 60" in text


def test_cli_seeds_must_be_positive(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "nlpipe", "compare", "--recipes", "ner-gru", "--seeds", "0",
                             "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "--seeds" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_pretraining_cost_is_shown_apart_for_init_from_runs(tmp_path):
    source = _fake_run(tmp_path / "pretrain-x", task="masked-lm", model={"type": "bert"}, metric="perplexity",
                       test={"perplexity": 9.0}, params=5, wall=1234.5, tps=1.0, curve=[])
    tuned = _fake_run(tmp_path / "ner-p", task="token-classification", model={"type": "bert", "init_from": str(source)},
                      metric="f1", test={"f1": 50.0}, params=5, wall=10.0, tps=1.0, curve=[])
    report = compare_runs([tuned], tmp_path / "rep")
    (row,) = _markdown_tables(report.markdown.read_text())["token-classification/pretraining cost"]
    assert row["pretrained from"] == str(source)
    assert _number(row["pretraining wall time (s)"]) == pytest.approx(1234.5)
    assert _number(row["pretraining tokens"]) == 1000  # _fake_run's train.tokens
    board = _markdown_tables(report.markdown.read_text())["token-classification/leaderboard"]
    assert board[0]["pretrained from"] == str(source)


def test_runs_of_one_recipe_with_other_settings_are_separate_entries(tmp_path):
    """A distilled student (same recipe name, `train.teacher` set) is not a second seed of the plain recipe:
    two entries, the student's labelled by the setting that differs; seeds of each setting still aggregate."""

    def run(folder: str, f1: float, seed: int, teacher: str | None) -> Path:
        path = _fake_run(tmp_path / folder, task="token-classification", model={"type": "rnn_tagger"},
                         metric="f1", test={"f1": f1}, params=10, wall=1.0, tps=1.0, curve=[(10, f1)])
        recipe = yaml.safe_load((path / "recipe.yaml").read_text())
        recipe.update(name=folder, train={"seed": seed, "teacher": teacher, "learning_rate": 0.002})
        (path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        info = json.loads((path / "run_info.json").read_text())
        (path / "run_info.json").write_text(json.dumps({**info, "recipe": "ner-crf"}))
        return path

    runs = [run("plain-42", 80.0, 42, None), run("plain-43", 82.0, 43, None),
            run("student-42", 90.0, 42, "runs/bert-teacher")]
    compare_runs(runs, tmp_path / "rep")
    board = json.loads((tmp_path / "rep" / "leaderboard.json").read_text())["token-classification"]
    assert [(e["recipe"], e["mean"], len(e["runs"])) for e in board] == [
        ("ner-crf [train.teacher=runs/bert-teacher]", 90.0, 1), ("ner-crf", 81.0, 2)]
