#!/usr/bin/env python3
"""Checks that checkpoints the workbench writes load in Hugging Face transformers with our predictions.

The contract (docs/exports.md): a checkpoint loads in transformers with the workbench's logits
(largest difference <= 1e-4) or refuses to load; never silently wrong. Run by hand or by a
benchmark, not by CI (it needs torch and transformers, pinned in benches/requirements.txt):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r benches/requirements.txt
    cargo build --release --workspace
    .venv-bench/bin/python scripts/check_exports.py [DIR...]

Each DIR is a checkpoint the workbench wrote (a run's `student/`, a taught teacher). Without
DIRs, or with `--fresh` beside them, it also checks exports made here: the pinned MiniLM with a
fresh head under each pooling, and the tiny RoBERTa, XLM-R and DistilBERT checkpoints of
core/models/fixtures/parity with a fresh mean-pooled head. For each checkpoint:

1. a mean-pooled export must be refused without `trust_remote_code` (a native class would give
   it a random pooler); a `cls` one loads as transformers' native class;
2. 50 varied texts (short, long past the length the model was trained at, punctuation, digits,
   accents, other scripts): token ids equal to ours and largest logit difference <= 1e-4, with
   the tokenizer's truncation and (mean-pooled) without it, where the model cuts itself;
3. `pipeline("text-classification")` on a 2,000-word text runs and picks our top label;
4. tokenizer_config.json's max length, and whether README.md (the model card) is there.
Exits non-zero when any check fails.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

TOLERANCE = 1e-4
REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "the hockey team won game overtime nasa launched telescope orbit congress debated gun control law "
    "computer graphics card driver windows installation hardware software market stocks fell bank "
    "election vote church faith doctor medicine car engine space shuttle encryption key chip"
).split()


def varied_texts(count: int = 50) -> list[str]:
    """Short, medium and long texts (the longest far past 128 and 512 tokens), with punctuation,
    digits, capitals, accents, other scripts and odd spacing."""
    rng = random.Random(0)
    specials = ["", "a", "Short!", "ÉCOLE café naïve résumé", "数据 模型 学习", "Привет, мир", "emoji 🙂 text",
                "  many   spaces\tand\ttabs\n", "UPPER lower MiXeD 1234 3.14 $100 #tag @user", "don't can't won't"]
    texts = list(specials)
    while len(texts) < count:
        length = rng.choice([5, 20, 60, 150, 400, 900])
        words = [rng.choice(WORDS) for _ in range(length)]
        if rng.random() < 0.5:
            words = [w.capitalize() + "," if rng.random() < 0.1 else w for w in words]
        texts.append(" ".join(words))
    return texts[:count]


def ours(workbench: str, model: str, texts: list[str], extra: list[str]) -> dict:
    out = subprocess.run([workbench, "-q", "logits", "--model", model, *extra, "--", *texts],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def real_ids(rows: list[list[int]], masks: list[list[int]]) -> list[list[int]]:
    return [[i for i, m in zip(row, mask) if m] for row, mask in zip(rows, masks)]


def check(workbench: str, directory: Path) -> bool:
    """Every check of the module doc on one checkpoint; prints one line per check."""
    config = json.loads((directory / "config.json").read_text())
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    max_length = tokenizer_config["model_max_length"]
    mean = config.get("pooling") == "mean"
    print(f"\n{directory}: model_type {config['model_type']}, pooling {config.get('pooling', 'cls')}, "
          f"{len(config['id2label'])} labels, model_max_length {max_length}, "
          f"model card: {'yes' if (directory / 'README.md').is_file() else 'NO'}")
    passed = True
    if mean:
        try:
            # transformers asks on a terminal before it refuses: answer as a script would, with nothing.
            sys.stdin = open(os.devnull)
            AutoModelForSequenceClassification.from_pretrained(directory)
            print("  FAIL: loaded without trust_remote_code")
            passed = False
        except Exception as refusal:  # transformers raises ValueError; any refusal is the contract
            # On a new line: transformers' own question ends without one.
            print(f"\n  refused without trust_remote_code: {str(refusal).splitlines()[0][:160]}")
    model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=mean).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=mean)
    print(f"  loaded as {type(model).__name__}, tokenizer {type(tokenizer).__name__}")

    texts = varied_texts()
    mine = ours(workbench, str(directory), texts, ["--max-length", str(max_length)])
    our_logits = torch.tensor(mine["logits"])
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    if mine["labels"] != labels:
        print(f"  FAIL: our labels {mine['labels']} differ from id2label {labels}")
        passed = False
    ways = [("truncation=True", {"truncation": True})] + ([("no truncation (the model cuts)", {})] if mean else [])
    for name, options in ways:
        encoded = tokenizer(texts, padding=True, return_tensors="pt", **options)
        if "truncation" in options:
            same = real_ids(encoded["input_ids"].tolist(), encoded["attention_mask"].tolist()) == \
                real_ids(mine["input_ids"], mine["attention_mask"])
        else:
            same = None
        with torch.no_grad():
            logits = model(**encoded).logits
        difference = (logits - our_logits).abs().max().item()
        ok = difference <= TOLERANCE and same is not False
        passed &= ok
        ids = "" if same is None else f"; token ids identical: {same}"
        print(f"  {'ok' if ok else 'FAIL'}: {name}: max |ours - transformers| = {difference:.3g} over "
              f"{len(texts)} texts x {logits.shape[1]} labels (|logits| up to {our_logits.abs().max():.2f}){ids}")

    long_text = " ".join(random.Random(1).choice(WORDS) for _ in range(2000))
    classify = pipeline("text-classification", model=str(directory), tokenizer=str(directory), trust_remote_code=mean)
    # A native class reads at most its position table: the pipeline needs the tokenizer to cut.
    answer = classify(long_text, **({} if mean else {"truncation": True}))[0]
    mine = ours(workbench, str(directory), [long_text], ["--max-length", str(max_length)])
    top = mine["labels"][max(range(len(mine["labels"])), key=lambda i: mine["logits"][0][i])]
    ok = answer["label"] == top
    passed &= ok
    call = "pipeline(text)" if mean else "pipeline(text, truncation=True)"
    print(f"  {'ok' if ok else 'FAIL'}: {call} on a 2,000-word text: {answer['label']} ({answer['score']:.4f}); "
          f"ours: {top}")
    return passed


def fresh_exports(workbench: str, tmp: Path) -> list[Path]:
    """MiniLM with a fresh head under each pooling; the tiny families with a fresh mean-pooled head."""
    made = []
    sources = [("minilm", pooling, 128) for pooling in ["cls", "mean"]]
    sources += [(str(REPO / "core/models/fixtures/parity" / f), "mean", 24) for f in ["roberta", "xlm-roberta", "distilbert"]]
    for model, pooling, max_length in sources:
        out = tmp / f"{Path(model).name}-{pooling}"
        ours(workbench, model, ["warm-up"], ["--labels", "alpha,beta,gamma,delta", "--seed", "7", "--pooling",
                                             pooling, "--max-length", str(max_length), "--save", str(out)])
        made.append(out)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", type=Path, help="checkpoints the workbench wrote")
    parser.add_argument("--workbench", default=str(REPO / "target/release/workbench"))
    parser.add_argument("--fresh", action="store_true", help="also check fresh exports made here")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = list(args.dirs)
        if args.fresh or not dirs:
            dirs += fresh_exports(args.workbench, Path(tmp))
        results = [check(args.workbench, d) for d in dirs]
    print("\nPASS" if all(results) else "\nFAIL", f"({sum(results)} of {len(results)} checkpoints; tolerance {TOLERANCE})")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
