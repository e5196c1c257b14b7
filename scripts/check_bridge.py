#!/usr/bin/env python3
"""Checks the live Python bridge (the `transformers` teacher) against real transformers.

Run by hand or by a benchmark, not by CI (it needs torch and transformers, pinned in
scripts/requirements-bridge.txt; CI tests the protocol against a fake worker):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/requirements-bridge.txt
    cargo build --release --workspace
    .venv-bench/bin/python scripts/check_bridge.py

1. A tiny BERT (the pinned MiniLM cut to 2 layers with a fresh seeded head, saved by `workbench
   logits --save`), under `cls` pooling (transformers' native class) and `mean` (the class the
   export writes beside it): the same checkpoint as a `bert` teacher (our encoder) and as a
   `transformers` teacher (the bridge, this interpreter), `workbench predict --json` on varied
   texts; the probabilities must agree to 1e-4.
2. A tiny random DeBERTa-v2, an architecture our encoder refuses: `config check` must refuse it as
   a `bert` teacher and accept it as a `transformers` one, and `predict` must answer through the
   bridge with its labels.
Exits non-zero when a check fails.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOLERANCE = 1e-4
TEXTS = ["the hockey team won the game in overtime", "nasa launched a new telescope", "short", "",
         "congress debated the gun law " * 60]


def workbench(binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "-q", *args], capture_output=True, text=True, check=check)


def teachers_config(directory: Path, path: Path, labels: list[str], trust: bool) -> Path:
    config = directory / f"{path.name}.toml"
    config.write_text(
        f'[teachers.ours]\nplugin = "bert"\ncheckpoints = ["{path}"]\nmax_length = 128\n\n'
        f'[teachers.bridge]\nplugin = "transformers"\nmodel = "{path}"\npython = "{sys.executable}"\n'
        f'max_length = 128\ntrust_remote_code = {str(trust).lower()}\n\n'
        '[estimator]\nplugin = "entropy"\n\n[strategy]\nplugin = "vanilla-kd"\n'
    )
    return config


def probabilities(binary: str, config: Path, teacher: str) -> list[dict]:
    out = workbench(binary, "predict", "--config", str(config), "--teacher", teacher, "--json", "--", *TEXTS)
    return [dict(json.loads(line)["probabilities"]) for line in out.stdout.splitlines()]


def bert_parity(binary: str, tmp: Path) -> bool:
    passed = True
    labels = ["alpha", "beta", "gamma"]
    for pooling in ["cls", "mean"]:
        saved = tmp / f"bert-{pooling}"
        workbench(binary, "logits", "--model", "minilm", "--layers", "2", "--labels", ",".join(labels), "--seed", "3",
                  "--pooling", pooling, "--save", str(saved), "warm-up")
        config = teachers_config(tmp, saved, labels, trust=pooling == "mean")
        ours, bridge = probabilities(binary, config, "ours"), probabilities(binary, config, "bridge")
        difference = max(abs(o[l] - b[l]) for o, b in zip(ours, bridge) for l in labels)
        ok = difference <= TOLERANCE and len(ours) == len(TEXTS)
        passed &= ok
        print(f"{'ok' if ok else 'FAIL'}: tiny BERT, {pooling} pooling: max |our encoder - the bridge| = "
              f"{difference:.3g} over {len(TEXTS)} texts x {len(labels)} probabilities")
    return passed


def deberta(binary: str, tmp: Path) -> bool:
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    directory = tmp / "deberta-v2"
    labels = ["sci.space", "soc.religion.christian", "talk.politics.guns"]
    config = DebertaV2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=128,
                             id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(0)
    DebertaV2ForSequenceClassification(config).save_pretrained(directory)
    # The pinned MiniLM's WordPiece tokenizer (its vocabulary is the model's): nothing downloaded.
    minilm = tmp / "bert-cls"
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(minilm / name, directory / name)
    config = teachers_config(tmp, directory, labels, trust=False)
    refused = workbench(binary, "config", "check", str(config), check=False)
    refusal = "model_type `deberta-v2` is not supported by our encoder"
    ok = refused.returncode != 0 and refusal in refused.stderr
    print(f"{'ok' if ok else 'FAIL'}: a DeBERTa-v2 `bert` teacher is refused: {refusal} ...")
    bridge_only = tmp / "deberta-bridge.toml"
    bridge_only.write_text("[teachers.bridge]" + config.read_text().split("[teachers.bridge]")[1])
    checked = workbench(binary, "config", "check", str(bridge_only), check=False)
    answered = probabilities(binary, bridge_only, "bridge")
    good = checked.returncode == 0 and len(answered) == len(TEXTS) and set(answered[0]) == set(labels)
    print(f"{'ok' if good else 'FAIL'}: the same DeBERTa-v2 through the bridge: `{checked.stdout.strip()}`; "
          f"predict answers over {sorted(answered[0])}")
    return ok and good


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/workbench"
    import torch
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {sys.executable}")
    with tempfile.TemporaryDirectory() as tmp:
        results = [bert_parity(binary, Path(tmp)), deberta(binary, Path(tmp))]
    print("PASS" if all(results) else "FAIL")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
