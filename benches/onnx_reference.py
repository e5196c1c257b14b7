"""ONNX Runtime on the same model, batch, length and threads as our benchmark: the inference
anchor next to PyTorch. Exports MiniLM-L6 (sequence classifier, 10 labels, eval mode) with
torch.onnx, then measures it in three settings, printing JSON lines like
`cargo bench --bench throughput` with the setting in `runtime`:

- `ort_fp32`: the exported graph, ONNX Runtime's full graph optimisations, fp32;
- `ort_fp32_fused`: the same after ONNX Runtime's BERT fusions (attention, layer norm, GELU);
- `ort_int8`: the exported graph with dynamically quantised int8 weights, ONNX Runtime's fastest
  setting on a CPU (other numbers than fp32: a speed anchor, not a precision peer).

An inference graph has no dropout, so ONNX Runtime's 16-pass MC scoring is 16 evaluation passes:
`mc16_scoring` here is the evaluation rate over 16, a lower bound on what MC would cost it."""

import json
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model
from transformers import BertForSequenceClassification

from timing import rate

directory = os.environ["MINILM_DIR"]
batch_size = int(os.environ.get("BENCH_BATCH", 32))
length = int(os.environ.get("BENCH_LENGTH", 64))
threads = int(os.environ.get("BENCH_THREADS", 2))
torch.manual_seed(0)
tokens = batch_size * length

model = BertForSequenceClassification.from_pretrained(directory, num_labels=10).eval()
ids = torch.randint(1000, 30000, (batch_size, length))
mask = torch.ones(batch_size, length, dtype=torch.long)
work = tempfile.mkdtemp()
exported = os.path.join(work, "minilm.onnx")
with torch.no_grad():
    reference = model(input_ids=ids, attention_mask=mask).logits.numpy()
    torch.onnx.export(
        model, (ids, mask), exported, input_names=["input_ids", "attention_mask"], output_names=["logits"],
        dynamo=False, opset_version=17,
    )
config = model.config
fused = os.path.join(work, "minilm-fused.onnx")
optimize_model(
    exported, model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
).save_model_to_file(fused)
quantized = os.path.join(work, "minilm-int8.onnx")
quantize_dynamic(exported, quantized, weight_type=QuantType.QInt8)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
for runtime, path in [("ort_fp32", exported), ("ort_fp32_fused", fused), ("ort_int8", quantized)]:
    runner = session(path)
    logits = runner.run(["logits"], feeds)[0]
    # A wrong export would make a fast anchor meaningless: its logits must be the model's.
    difference = float(np.abs(logits - reference).max())
    per_second = rate(lambda: runner.run(["logits"], feeds))
    for workload, passes in [("eval_forward", 1), ("mc16_scoring", 16)]:
        print(json.dumps({
            "workload": workload, "runtime": runtime, "tokens_per_s": per_second * tokens / passes,
            "max_abs_logit_difference": difference,
        }))
    sys.stdout.flush()
