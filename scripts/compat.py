#!/usr/bin/env python3
"""Compares our BERT logits with Hugging Face transformers on the same checkpoints.

Run by hand or by a benchmark, not by CI (it needs torch and transformers):

    python3 -m venv .venv-compat && .venv-compat/bin/pip install torch transformers
    cargo build --release --workspace
    .venv-compat/bin/python scripts/compat.py [--teacher DIR]

1. The MiniLM asset with a fresh seeded head, under each pooling: our `workbench logits` saves the
   model it built, transformers loads that directory, and both run the same token ids. `cls` is
   transformers' own `BertForSequenceClassification`; `mean` is the class our export writes
   beside the weights (`modeling_workbench.py`: transformers' encoder, averaged over the attention
   mask, then the saved classifier), loaded with `trust_remote_code=True`.
2. A teacher we trained and exported (`--teacher`, or one trained here with `workbench teach`).
3. Tiny random RoBERTa, XLM-RoBERTa and DistilBERT sequence classifiers, each with its own small
   tokenizer (byte-level BPE, sentencepiece unigram, WordPiece) trained here on a few sentences,
   built and saved by transformers. With `--fixtures DIR` they are written there with
   transformers' token ids and logits (expected.json): the committed copies under
   core/models/fixtures/parity let `cargo test` check parity without Python.
Prints the maximum absolute difference of the logits for each and exits non-zero above 1e-4.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TEXTS = [
    "the hockey team won the game in overtime",
    "nasa launched a new telescope into orbit around the sun",
    "congress debated the new gun control law",
    "short",
    "a much longer text that goes on and on about computers graphics cards drivers and the many "
    "ways in which a windows installation can fail when the hardware is older than the software",
]
TOLERANCE = 1e-4


def real_ids(rows: list[list[int]], masks: list[list[int]]) -> list[list[int]]:
    """Each row's token ids without its padding."""
    return [[i for i, m in zip(row, mask) if m] for row, mask in zip(rows, masks)]


def ours(workbench: str, model: str, extra: list[str]) -> dict:
    out = subprocess.run([workbench, "-q", "logits", "--model", model, *extra, *TEXTS], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def theirs(directory: Path, ours_out: dict) -> tuple[torch.Tensor, bool]:
    # A mean-pooled export names its own class (modeling_workbench.py beside the weights);
    # transformers runs it only when asked to (scripts/check_exports.py checks the refusal).
    mean = json.loads((directory / "config.json").read_text()).get("pooling") == "mean"
    model = AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=mean).eval()
    ids = torch.tensor(ours_out["input_ids"])
    mask = torch.tensor(ours_out["attention_mask"]).long()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    # Same token ids from the HF tokenizer (no padding beyond ours, same truncation).
    same_ids = all(
        tokenizer(text, truncation=True, max_length=128)["input_ids"] == ids
        for text, ids in zip(TEXTS, real_ids(ours_out["input_ids"], ours_out["attention_mask"]))
    )
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits, same_ids


def compare(name: str, directory: Path, ours_out: dict) -> float:
    logits, same_ids = theirs(directory, ours_out)
    difference = (logits - torch.tensor(ours_out["logits"])).abs().max().item()
    print(f"{name}: max |ours - transformers| = {difference:.3g} over {len(TEXTS)} texts x {logits.shape[1]} labels; "
          f"tokenizer ids identical: {same_ids}")
    return difference


# A corpus for the tiny tokenizers, and the short length that makes the longest text truncate.
CORPUS = TEXTS * 4 + ["the cat sat on the mat", "stocks fell on wall street", "a new film opened this week"]
FIXTURE_MAX_LENGTH = 24
LABELS = ["alpha", "beta", "gamma"]


def tiny_tokenizer(family: str):
    """A small tokenizer of the family's kind, trained on CORPUS, as a transformers fast tokenizer."""
    import tokenizers
    from tokenizers import processors
    from transformers import DistilBertTokenizerFast, RobertaTokenizerFast, XLMRobertaTokenizerFast

    if family == "distilbert":
        trained = tokenizers.BertWordPieceTokenizer(lowercase=True)
        trained.train_from_iterator(CORPUS, vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        return DistilBertTokenizerFast(tokenizer_object=trained._tokenizer)
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    if family == "roberta":
        trained = tokenizers.ByteLevelBPETokenizer()
        trained.train_from_iterator(CORPUS, vocab_size=300, special_tokens=special)
        fast = RobertaTokenizerFast
    else:
        trained = tokenizers.SentencePieceUnigramTokenizer()
        trained.train_from_iterator(CORPUS, vocab_size=120, special_tokens=special, unk_token="<unk>")
        fast = XLMRobertaTokenizerFast
    trained._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return fast(tokenizer_object=trained._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def tiny_model(family: str, vocab_size: int, pad_token_id: int):
    """A random classifier with weights large enough that the logits differ by whole units."""
    from transformers import DistilBertConfig, RobertaConfig, XLMRobertaConfig

    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {l: i for i, l in enumerate(LABELS)}}
    if family == "distilbert":
        config = DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=64, pad_token_id=pad_token_id, **labels)
    else:
        kind = RobertaConfig if family == "roberta" else XLMRobertaConfig
        config = kind(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64 + pad_token_id + 1, type_vocab_size=1,
                      pad_token_id=pad_token_id, bos_token_id=0, eos_token_id=2, **labels)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                parameter.copy_(1.0 + 0.1 * torch.randn_like(parameter) if name.endswith("weight")
                                else 0.1 * torch.randn_like(parameter))
            else:
                parameter.normal_(0.0, 0.3)
    return model


def family_parity(workbench: str, family: str, directory: Path) -> float:
    """Builds the tiny `family` classifier into `directory` with expected.json, and compares ours."""
    tokenizer = tiny_tokenizer(family)
    model = tiny_model(family, len(tokenizer), tokenizer.pad_token_id)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    encoded = tokenizer(TEXTS, padding=True, truncation=True, max_length=FIXTURE_MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
    ids = real_ids(encoded["input_ids"].tolist(), encoded["attention_mask"].tolist())
    expected = {"max_length": FIXTURE_MAX_LENGTH, "texts": TEXTS, "input_ids": ids, "logits": logits.tolist()}
    (directory / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    out = ours(workbench, str(directory), ["--max-length", str(FIXTURE_MAX_LENGTH)])
    our_ids = real_ids(out["input_ids"], out["attention_mask"])
    difference = (logits - torch.tensor(out["logits"])).abs().max().item()
    print(f"tiny random {family}: max |ours - transformers| = {difference:.3g} over {len(TEXTS)} texts x "
          f"{len(LABELS)} labels (logits up to {logits.abs().max().item():.2f}); "
          f"tokenizer ids identical: {our_ids == ids}")
    return difference if our_ids == ids else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workbench", default="target/release/workbench")
    parser.add_argument("--teacher", help="a checkpoint written by `workbench teach` (default: train a small one)")
    parser.add_argument("--fixtures", help="write the tiny RoBERTa / XLM-R / DistilBERT checkpoints here to commit")
    parser.add_argument("--families-only", action="store_true", help="only part 3 (no MiniLM asset, no teacher)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for family in ["roberta", "xlm-roberta", "distilbert"]:
            directory = Path(args.fixtures or tmp) / family
            directory.mkdir(parents=True, exist_ok=True)
            worst = max(worst, family_parity(args.workbench, family, directory))
        if not args.families_only:
            worst = max(worst, bert_parity(args, tmp))
    print("PASS" if worst <= TOLERANCE else "FAIL", f"(tolerance {TOLERANCE})")
    return 0 if worst <= TOLERANCE else 1


def bert_parity(args, tmp: str) -> float:
    """Parts 1 and 2: the MiniLM asset under each pooling and a teacher exported by workbench."""
    worst = 0.0
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
    return worst


if __name__ == "__main__":
    sys.exit(main())
