#!/usr/bin/env python3
"""Writes a teacher's signals file (docs/signals.md) from any Hugging Face sequence classifier.

A model our encoder cannot run (DeBERTa, ModernBERT, ELECTRA, a decoder classifier, anything
transformers loads with AutoModelForSequenceClassification) joins a run as a `signals-file`
teacher: this script runs it in PyTorch, on any device, over the texts the run reads, and writes
its logits, a pooled hidden state and Monte-Carlo dropout passes:

    workbench texts CONFIG --out texts.jsonl              # the texts the run will ask about
    python3 scripts/write_signals.py --model DIR --texts texts.jsonl --out teacher.safetensors \\
        --device cuda --passes 16
    # then in the config: [teachers.t] plugin = "signals-file", file = "teacher.safetensors"

Requirements: scripts/requirements-bridge.txt (torch, transformers, safetensors; pinned).
The texts file is `workbench texts` output (JSON lines with a `text` field), or a `.txt` file
read as the workbench reads a transfer set (one text per line, trimmed, empty lines skipped).
Each text is keyed by the sha256 of its UTF-8 bytes, so the file must be written for exactly the
texts the workbench reads. MC dropout is `model.train()` under a seeded generator: not
bit-identical to the workbench's own passes, and it need not be (the run's cache keys the
teacher by this file's hash).
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

FORMAT = "workbench-signals/1"


def read_texts(path: Path) -> list[str]:
    raw = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return [json.loads(line)["text"] for line in raw.split("\n") if line.strip()]
    # As the workbench reads a `.txt` transfer set: split on \n only, trim, skip empty lines.
    return [line.strip() for line in raw.split("\n") if line.strip()]


def file_sha256(directory: Path) -> str:
    weights = directory / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint directory (or a hub name, if you allow downloads)")
    parser.add_argument("--texts", required=True, type=Path, help="`workbench texts` output, or a .txt file")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    parser.add_argument("--passes", type=int, default=16, help="Monte-Carlo dropout passes (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dropout passes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text, special tokens included")
    parser.add_argument("--hidden", choices=["mean", "cls", "none"], default="mean",
                        help="the pooled hidden state written: mean over the attention mask, the first token, or none")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model's own code (needed for checkpoints the workbench exported with mean pooling)")
    args = parser.parse_args()

    texts = read_texts(args.texts)
    if not texts:
        sys.exit(f"{args.texts}: no texts")
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    model.to(device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def batches():
        for start in range(0, len(texts), args.batch_size):
            chunk = texts[start:start + args.batch_size]
            encoded = tokenizer(chunk, padding=True, truncation=True, max_length=args.max_length, return_tensors="pt")
            yield {k: v.to(device) for k, v in encoded.items()}

    logits, hidden = [], []
    model.eval()
    with torch.no_grad():
        for encoded in batches():
            out = model(**encoded, output_hidden_states=args.hidden != "none")
            logits.append(out.logits.float().cpu())
            if args.hidden != "none":
                last = out.hidden_states[-1].float()
                if args.hidden == "cls":
                    hidden.append(last[:, 0].cpu())
                else:
                    mask = encoded["attention_mask"].unsqueeze(-1).to(last.dtype)
                    hidden.append(((last * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).cpu())
        samples = []
        model.train()  # dropout on: Monte-Carlo dropout
        for p in range(args.passes):
            torch.manual_seed(args.seed * 1_000_003 + p)
            samples.append(torch.cat([model(**encoded).logits.float().cpu() for encoded in batches()]))
        model.eval()

    keys = torch.tensor([list(hashlib.sha256(t.encode("utf-8")).digest()) for t in texts], dtype=torch.uint8)
    tensors = {"text_sha256": keys, "logits": torch.cat(logits).contiguous()}
    if hidden:
        tensors["hidden"] = torch.cat(hidden).contiguous()
    if samples:
        tensors["samples"] = torch.stack(samples).contiguous()
    metadata = {
        "format": FORMAT,
        "labels": json.dumps(labels),
        "model": str(args.model),
        "model_sha256": file_sha256(Path(args.model)),
        "passes": str(args.passes),
        "seed": str(args.seed),
        "max_length": str(args.max_length),
        "hidden_pooling": args.hidden,
        "device": str(device),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=metadata)
    print(f"{args.out}: {len(texts)} texts x {len(labels)} labels ({', '.join(labels)}), "
          f"{args.passes} dropout passes, hidden {args.hidden}, on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
