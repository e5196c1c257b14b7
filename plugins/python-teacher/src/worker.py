# The Python worker of the `transformers` teacher (workbench-python-teacher): loads a Hugging Face
# sequence classifier with transformers on the device it is told, then answers the host's forward
# requests. Frames on stdin and on the original stdout: a little-endian u64 length, then the
# body. Protocol (docs/signals.md, "A live Python teacher"):
#   host -> {"load": {model, device, max_length, batch_size, hidden, trust_remote_code}}
#   worker -> {"ready": {labels, hidden_size, model_type, device, torch, transformers}} | {"error": ...}
#   host -> {"forward": {texts, passes, seed, hidden}}   (passes 0: one pass with dropout off)
#   worker -> {"output": {passes, hidden_size}}, then a frame of f32 logits [passes or 1, B, L]
#             and, when asked and available, a frame of f32 hidden states [B, H]; or {"error": ...}
import json
import os
import struct
import sys

frames_in = sys.stdin.buffer
frames_out = os.fdopen(os.dup(1), "wb")
# Whatever the model or a library prints goes to stderr, never into the frames.
os.dup2(2, 1)
sys.stdout = sys.stderr


def read():
    head = frames_in.read(8)
    if len(head) < 8:
        return None
    (length,) = struct.unpack("<Q", head)
    return frames_in.read(length)


def write(body):
    frames_out.write(struct.pack("<Q", len(body)))
    frames_out.write(body)
    frames_out.flush()


def send(message):
    write(json.dumps(message).encode("utf-8"))


def main():
    load = json.loads(read())["load"]
    try:
        import torch
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as error:
        send({"error": f"{sys.executable} cannot import torch and transformers ({error}): install "
                       "scripts/requirements-bridge.txt into it, or set the teacher's `python`"})
        return
    try:
        device = torch.device(load["device"])
        options = {"trust_remote_code": load["trust_remote_code"]}
        tokenizer = AutoTokenizer.from_pretrained(load["model"], **options)
        model = AutoModelForSequenceClassification.from_pretrained(load["model"], **options).to(device).eval()
    except Exception as error:  # any failure to load is the user's to read
        send({"error": f"cannot load {load['model']} on {load['device']}: {type(error).__name__}: {error}"})
        return
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    hidden_size = 0 if load["hidden"] == "none" else int(getattr(model.config, "hidden_size", 0) or 0)
    send({"ready": {"labels": labels, "hidden_size": hidden_size, "model_type": model.config.model_type,
                    "device": str(device), "torch": torch.__version__, "transformers": transformers.__version__}})

    def run(texts, want_hidden):
        logits, hidden = [], []
        for start in range(0, len(texts), load["batch_size"]):
            encoded = tokenizer(texts[start:start + load["batch_size"]], padding=True, truncation=True,
                                max_length=load["max_length"], return_tensors="pt").to(device)
            out = model(**encoded, output_hidden_states=want_hidden)
            logits.append(out.logits.float())
            if want_hidden:
                last = out.hidden_states[-1].float()
                if load["hidden"] == "cls":
                    hidden.append(last[:, 0])
                else:
                    mask = encoded["attention_mask"].unsqueeze(-1).to(last.dtype)
                    hidden.append((last * mask).sum(1) / mask.sum(1).clamp(min=1e-9))
        return torch.cat(logits), (torch.cat(hidden) if want_hidden else None)

    def as_bytes(tensor):
        return tensor.detach().cpu().contiguous().numpy().astype("<f4").tobytes()

    while (body := read()) is not None:
        request = json.loads(body)["forward"]
        try:
            want_hidden = request["hidden"] and hidden_size > 0
            passes = request["passes"]
            with torch.no_grad():
                model.eval()
                logits, hidden = run(request["texts"], want_hidden) if passes == 0 or want_hidden else (None, None)
                if passes > 0:
                    model.train()  # dropout on: Monte-Carlo dropout
                    samples = []
                    for p in range(passes):
                        torch.manual_seed(request["seed"] * 1_000_003 + p)
                        samples.append(run(request["texts"], False)[0])
                    model.eval()
                    logits = torch.stack(samples)
                else:
                    logits = logits.unsqueeze(0)
            send({"output": {"passes": max(passes, 1), "hidden_size": hidden_size if want_hidden else 0}})
            write(as_bytes(logits))
            if want_hidden:
                write(as_bytes(hidden))
        except Exception as error:
            send({"error": f"{type(error).__name__}: {error}"})


main()
