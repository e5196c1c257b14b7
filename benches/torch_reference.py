"""PyTorch + transformers on the same model, batch, length and threads as our benchmark.
Prints JSON lines like `cargo bench --bench throughput`."""

import json
import os
import sys

import torch
from transformers import BertForSequenceClassification

from timing import rate

directory = os.environ["MINILM_DIR"]
batch_size = int(os.environ.get("BENCH_BATCH", 32))
length = int(os.environ.get("BENCH_LENGTH", 64))
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 2)))
torch.manual_seed(0)

model = BertForSequenceClassification.from_pretrained(directory, num_labels=10)
model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
ids = torch.randint(1000, 30000, (batch_size, length))
mask = torch.ones(batch_size, length, dtype=torch.long)
labels = torch.arange(batch_size) % 10
tokens = batch_size * length


def report(workload, per_second):
    print(json.dumps({"workload": workload, "tokens_per_s": per_second * tokens}))
    sys.stdout.flush()


model.eval()
with torch.no_grad():
    report("eval_forward", rate(lambda: model(input_ids=ids, attention_mask=mask)))
    model.train()
    report("stochastic_forward", rate(lambda: model(input_ids=ids, attention_mask=mask)))
    report("mc16_scoring", rate(lambda: [model(input_ids=ids, attention_mask=mask) for _ in range(16)]))

optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def step():
    optimizer.zero_grad()
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    optimizer.step()


model.train()
report("training_step", rate(step))
