#!/usr/bin/env python3
"""Our tokenization against transformers' on the committed parity fixtures, two ways.

The workbench follows a checkpoint's tokenizer.json exactly. transformers 5 follows it too when
the tokenizer class is `PreTrainedTokenizerFast` (what our exports write in
tokenizer_config.json), but a family's own class (`XLMRobertaTokenizer`, ...) rebuilds its
pipeline from the vocabulary, which can tokenize differently. For each fixture this prints how
many of 50 varied texts (scripts/check_exports.py's) get other ids than ours from each, and the
first such text. Run by hand with the bench venv:

    .venv-bench/bin/python scripts/tokenizer_parity.py [target/release/workbench]
"""

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_exports import varied_texts  # noqa: E402

MAX_LENGTH = 64


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/workbench"
    texts = varied_texts()
    for family in ["roberta", "xlm-roberta", "distilbert"]:
        directory = Path("core/models/fixtures/parity") / family
        out = subprocess.run([binary, "-q", "logits", "--model", str(directory), "--max-length", str(MAX_LENGTH),
                              "--", *texts], capture_output=True, text=True, check=True)
        ours = json.loads(out.stdout)
        ours = [[i for i, m in zip(row, mask) if m] for row, mask in zip(ours["input_ids"], ours["attention_mask"])]
        for name, tokenizer in [("AutoTokenizer", AutoTokenizer.from_pretrained(directory)),
                                ("PreTrainedTokenizerFast", PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json")))]:
            theirs = [tokenizer(t, truncation=True, max_length=MAX_LENGTH)["input_ids"] for t in texts]
            differ = [t for t, a, b in zip(texts, theirs, ours) if a != b]
            first = f"; first: {differ[0]!r}" if differ else ""
            print(f"{family}: {name} ({type(tokenizer).__name__}) differs from ours on {len(differ)} of {len(texts)} texts{first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
