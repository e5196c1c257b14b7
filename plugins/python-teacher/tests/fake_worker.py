# A worker for the `transformers` teacher's tests: the built-in worker's protocol without torch,
# logits computed from each text's length, and failure modes chosen by the model's name.
import json
import os
import struct
import sys
import time

frames_in = sys.stdin.buffer
frames_out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
sys.stdout = sys.stderr


def read():
    head = frames_in.read(8)
    if len(head) < 8:
        return None
    return frames_in.read(struct.unpack("<Q", head)[0])


def write(body):
    frames_out.write(struct.pack("<Q", len(body)) + body)
    frames_out.flush()


def send(message):
    write(json.dumps(message).encode("utf-8"))


def floats(values):
    return struct.pack(f"<{len(values)}f", *values)


load = json.loads(read())["load"]
model = load["model"]
if model == "no-transformers":
    send({"error": f"{sys.executable} cannot import torch and transformers (No module named 'torch')"})
    sys.exit(0)
if model == "bad-load":
    send({"error": f"cannot load bad-load on {load['device']}: OSError: bad-load is not a checkpoint"})
    sys.exit(0)
# `fake:a,b` names the labels; the logits favour the first label for long texts, the second for short.
labels = model.split(":", 1)[1].split(",") if model.startswith("fake:") else ["neg", "pos"]
send({"ready": {"labels": labels, "hidden_size": 3, "model_type": "fake", "device": load["device"],
                "torch": "none", "transformers": "none"}})
while (body := read()) is not None:
    request = json.loads(body)["forward"]
    if model == "crash-on-forward":
        sys.exit(3)
    if model == "garbage-on-forward":
        frames_out.write(b"garbage!garbage!")
        frames_out.flush()
        time.sleep(30)
    if model == "stall":
        time.sleep(30)
    texts, passes = request["texts"], request["passes"]
    rows = [[0.1 * len(t), -0.1 * len(t)] for t in texts]
    if passes == 0:
        logits = [x for row in rows for x in row]
    else:
        logits = [x + 0.01 * p + 0.001 * request["seed"] for p in range(passes) for row in rows for x in row]
    print("a line the model printed", flush=True)  # must reach stderr, not the frames
    send({"output": {"passes": max(passes, 1), "hidden_size": 3 if request["hidden"] else 0}})
    write(floats(logits))
    if request["hidden"]:
        write(floats([x for t in texts for x in (len(t), len(t.split()), 1.0)]))
