#!/usr/bin/env python3
"""Compares our BERT logits with Hugging Face transformers on the same checkpoints.

Run by hand or by a benchmark, not by CI (it needs torch and transformers):

    python3 -m venv .venv-compat && .venv-compat/bin/pip install torch transformers
    cargo build --release --workspace
    .venv-compat/bin/python scripts/compat.py [--teacher DIR]

1. The MiniLM asset with a fresh seeded head, under each pooling: our `workbench logits` saves the
   model it built, transformers loads that directory, and both run the same token ids. `cls` is
   transformers' own `BertForSequenceClassification`; `mean` (recorded as `"pooling": "mean"` in
   config.json, which transformers ignores) is transformers' encoder, averaged over the attention
   mask, then the saved classifier.
2. A teacher we trained and exported (`--teacher`, or one trained here with `workbench teach`).
Prints the maximum absolute difference of the logits for each and exits non-zero above 1e-4.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertForSequenceClassification, BertModel

TEXTS = [
    "the hockey team won the game in overtime",
    "nasa launched a new telescope into orbit around the sun",
    "congress debated the new gun control law",
    "short",
    "a much longer text that goes on and on about computers graphics cards drivers and the many "
    "ways in which a windows installation can fail when the hardware is older than the software",
]
TOLERANCE = 1e-4


def ours(workbench: str, model: str, extra: list[str]) -> dict:
    out = subprocess.run([workbench, "-q", "logits", "--model", model, *extra, *TEXTS], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def theirs(directory: Path, ours_out: dict) -> tuple[torch.Tensor, bool]:
    model = BertForSequenceClassification.from_pretrained(directory).eval()
    ids = torch.tensor(ours_out["input_ids"])
    mask = torch.tensor(ours_out["attention_mask"]).long()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # Same token ids from the HF tokenizer (no padding beyond ours, same truncation).
    same_ids = all(
        tokenizer(text, truncation=True, max_length=128)["input_ids"] == [i for i, m in zip(row, row_mask) if m]
        for text, row, row_mask in zip(TEXTS, ours_out["input_ids"], ours_out["attention_mask"])
    )
    with torch.no_grad():
        if json.loads((directory / "config.json").read_text()).get("pooling") != "mean":
            return model(input_ids=ids, attention_mask=mask).logits, same_ids
        encoder = BertModel.from_pretrained(directory, add_pooling_layer=False).eval()
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        head = load_file(directory / "model.safetensors")
        return pooled @ head["classifier.weight"].T + head["classifier.bias"], same_ids


def compare(name: str, directory: Path, ours_out: dict) -> float:
    logits, same_ids = theirs(directory, ours_out)
    difference = (logits - torch.tensor(ours_out["logits"])).abs().max().item()
    print(f"{name}: max |ours - transformers| = {difference:.3g} over {len(TEXTS)} texts x {logits.shape[1]} labels; "
          f"tokenizer ids identical: {same_ids}")
    return difference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workbench", default="target/release/workbench")
    parser.add_argument("--teacher", help="a checkpoint written by `workbench teach` (default: train a small one)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for pooling in ["cls", "mean"]:
            fresh = Path(tmp) / f"minilm-fresh-head-{pooling}"
            flags = ["--labels", "alpha,beta,gamma,delta", "--seed", "7", "--pooling", pooling, "--save", str(fresh)]
            out = ours(args.workbench, "minilm", flags)
            worst = max(worst, compare(f"MiniLM-L6 with a fresh seeded head, {pooling} pooling", fresh, out))

        teacher = args.teacher
        if teacher is None:
            teacher = str(Path(tmp) / "teacher")
            config = Path(tmp) / "teach.toml"
            config.write_text(
                "[teach]\nlayers = 3\nlabels = [\"rec.sport.hockey\", \"sci.space\", \"talk.politics.guns\"]\n"
                f"output = \"{teacher}\"\nepochs = 1\nmax_length = 64\n\n"
                "[data]\ndataset = \"20newsgroups\"\nper_class = 30\ntest_per_class = 10\n"
            )
            subprocess.run([args.workbench, "-q", "teach", str(config)], check=True)
        out = ours(args.workbench, teacher, [])
        worst = max(worst, compare(f"teacher trained and exported by workbench ({teacher})", Path(teacher), out))
    print("PASS" if worst <= TOLERANCE else "FAIL", f"(tolerance {TOLERANCE})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
