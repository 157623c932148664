"""A saved run reloads in a fresh process (after `import nlpipe`) with the same logits (to float32 rounding) and score."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from nlpipe.run import evaluate_run, load_run, run_recipe

RELOAD = """
import json, sys, torch
import nlpipe
from transformers import AutoModelForTokenClassification, AutoTokenizer
model = AutoModelForTokenClassification.from_pretrained(sys.argv[1]).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
enc = tok(["Maria Johnson visited Berlin .", "Siemens said on Monday ."], padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
print(json.dumps(logits.tolist()))
"""


def test_fresh_process_reload_gives_identical_outputs_and_score(tmp_path: Path) -> None:
    result = run_recipe(
        "ner-bilstm-words", ["train.max_epochs=1", "model.hidden_size=16", "model.embedding_dim=16"],
        data="sample", output_dir=tmp_path / "run", progress=False,
    )
    _, _, model, tokenizer = load_run(result.run_dir)
    enc = tokenizer(["Maria Johnson visited Berlin .", "Siemens said on Monday ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        here = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    out = subprocess.run([sys.executable, "-c", RELOAD, str(result.run_dir)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    there = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))
    # Another process may reorder float32 sums (~1e-8); a weight or vocabulary lost on reload moves logits by >1e-3.
    torch.testing.assert_close(here, there, rtol=1e-5, atol=1e-6)
    assert evaluate_run(result.run_dir, "test")["f1"] == result.metrics["test"]["f1"]
