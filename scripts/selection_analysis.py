"""What full Monte-Carlo dropout's teacher selection rests on, from exported signals.

Reads the export of one method whose estimator is `mc-dropout` with `measure =
"mutual-information"` and `scale = "teacher-rank"` (two teachers):

    workbench sweep --selection-only --export-signals CONFIG...   # signals/<method>/ in the sweep dir
    python scripts/selection_analysis.py runs/<sweep>/signals/<method>

and prints, per split, the selection accuracy of
  - one deterministic pass (entropy ranked per teacher) and all S passes (BALD ranked per
    teacher; checked against the estimator's own scores),
  - fewer passes: S split into disjoint groups of K passes, mean and spread over the groups,
  - a fitted certainty: the BALD certainty of all S passes measured on a random share of the
    training texts only, and predicted for every other text (the rest of the training texts,
    validation, test) by ridge regression on the deterministic pass (log-probabilities, sorted
    and as they are, and the pooled hidden state; once without it), over 20 random shares,
  - the `mc-fitted` estimator's way: fitted on a share of the training texts (at least 256),
    every text predicted, the sampled ones too, validation and test texts ranked beside the
    training texts as the workbench scores them; fitted to the measured values or to their
    ranks within each teacher (`fit_ranks`), by one fit or as the mean of 10 fits on bootstrap
    resamples of the measured texts (`bags`), 20 draws.
Needs numpy and safetensors (scripts/requirements-analysis.txt).
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def entropy(p):
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(-1)


def bald_certainty(passes):
    """1 - mutual information / ln L over passes [S, N, L], as the mc-dropout estimator."""
    p = softmax(passes.astype(np.float64))
    return 1 - (entropy(p.mean(0)) - entropy(p).mean(0)) / np.log(p.shape[-1])


def entropy_certainty(logits):
    p = softmax(logits.astype(np.float64))
    return 1 - entropy(p) / np.log(p.shape[-1])


def teacher_rank(values):
    """The share of the other values below each (ties count half), as `teacher-rank`."""
    order = np.argsort(values, kind="stable")
    ranks, start, n = np.empty(len(values)), 0, len(values)
    while start < n:
        end = start
        while end + 1 < n and values[order[end + 1]] == values[order[start]]:
            end += 1
        ranks[order[start:end + 1]] = (start + 0.5 * (end - start)) / (n - 1)
        start = end + 1
    return ranks


def main(directory):
    labels = json.loads((directory / "labels.json").read_text())
    teachers = [t["name"] for t in labels["teachers"]]
    owned = [set(t["labels"]) for t in labels["teachers"]]
    if len(teachers) != 2:
        sys.exit(f"{directory}: this analysis compares two teachers, the export has {len(teachers)}")
    splits = {}
    for split in ("train", "validation", "test"):
        path = directory / f"{split}.safetensors"
        if path.exists():
            splits[split] = load_file(path)
    for split, tensors in splits.items():
        for name in teachers:
            for part in ("sampled", "hidden"):
                if f"{name}.{part}" not in tensors:
                    sys.exit(f"{directory}/{split}.safetensors has no `{name}.{part}`: export a method with an MC estimator")

    def selection(certainties, gold):
        a, b = (teacher_rank(c) for c in certainties)
        picks = np.where(b > a, 1, 0)  # the first teacher on a tie, as the workbench
        return float(np.mean([g in owned[p] for p, g in zip(picks, gold)]))

    full, reference = {}, {}
    print("split, texts: one pass entropy | all passes BALD | K passes, mean ± spread over disjoint groups")
    for split, t in splits.items():
        gold = t["gold"]
        full[split] = [bald_certainty(t[f"{n}.sampled"]) for n in teachers]
        picks = np.argmax(t["scores"], 1)  # the estimator's own scores
        own = float(np.mean([g in owned[p] for p, g in zip(picks, gold)]))
        mine = reference[split] = selection(full[split], gold)
        assert abs(mine - own) < 1e-9, f"{split}: recomputed BALD selects {mine}, the estimator {own}"
        one_pass = selection([entropy_certainty(t[f"{n}.deterministic"]) for n in teachers], gold)
        passes = t[f"{teachers[0]}.sampled"].shape[0]
        cells = []
        for k in (2, 4, 8):
            groups = [selection([bald_certainty(t[f"{n}.sampled"][i:i + k]) for n in teachers], gold)
                      for i in range(0, passes - k + 1, k)]
            cells.append(f"K={k} {np.mean(groups):.4f} ± {np.std(groups):.4f}")
        print(f"{split}, {len(gold)}: {one_pass:.4f} | K={passes} {mine:.4f} | " + ", ".join(cells))

    def features(split, name, hidden):
        t = splits[split]
        log_probs = np.log(softmax(t[f"{name}.deterministic"].astype(np.float64)))
        parts = [np.sort(log_probs, -1)[:, ::-1], log_probs] + ([t[f"{name}.hidden"]] if hidden else [])
        return np.concatenate(parts, 1)

    def ridge_predictions(name, hidden, measured, target, bags=1):
        """Ridge (lambda 10) from the measured training texts' features to `target`, predicting every
        split; with bags > 1 the mean of that many fits on bootstrap resamples of the measured texts."""
        x = features("train", name, hidden)[measured]
        everything = {split: features(split, name, hidden) for split in splits}
        rng = np.random.default_rng(0)
        resamples = [np.arange(len(x))] if bags == 1 else [rng.integers(len(x), size=len(x)) for _ in range(bags)]
        predicted = {split: 0.0 for split in splits}
        for rows in resamples:
            mean, scale = x[rows].mean(0), x[rows].std(0) + 1e-6
            design = lambda f: np.concatenate([(f - mean) / scale, np.ones((len(f), 1))], 1)
            d = design(x[rows])
            weights = np.linalg.solve(d.T @ d + 10.0 * np.eye(d.shape[1]), d.T @ target[rows])
            for split in splits:
                predicted[split] = predicted[split] + design(everything[split]) @ weights / len(resamples)
        return predicted

    n = len(splits["train"]["gold"])
    print("fitted certainty (ridge, lambda 10), mean ± spread [min, max] over 20 random shares:")
    for share, hidden in ((0.05, True), (0.1, True), (0.2, True), (0.3, True), (0.1, False)):
        results = {split: [] for split in splits}
        for seed in range(20):
            measured = np.random.default_rng(seed).random(n) < share
            predicted = {split: [] for split in splits}
            for i, name in enumerate(teachers):
                for split, values in ridge_predictions(name, hidden, measured, full["train"][i][measured]).items():
                    if split == "train":
                        values[measured] = full["train"][i][measured]
                    predicted[split].append(values)
            for split in splits:
                results[split].append(selection(predicted[split], splits[split]["gold"]))
        cells = [f"{split} {np.mean(v):.4f} ± {np.std(v):.4f} [{np.min(v):.3f}, {np.max(v):.3f}]" for split, v in results.items()]
        inputs = "log-probabilities and hidden state" if hidden else "log-probabilities only"
        print(f"  MC on {share:.0%} of the training texts, from {inputs}: " + ", ".join(cells))

    minimum = 256
    print(f"mc-fitted (fitted on a share of the training texts, at least {minimum}, every text predicted, "
          "held-out texts ranked beside the training texts; ridge, lambda 10), mean ± spread [min, max] over 20 draws:")
    for share, fit_ranks, bags in ((0.1, False, 1), (0.1, False, 10), (0.1, True, 10), (0.3, False, 10), (0.3, True, 10)):
        results = {split: [] for split in splits}
        for seed in range(20):
            count = min(n, max(minimum, int(np.ceil(share * n))))
            measured = np.zeros(n, bool)
            measured[np.random.default_rng(seed).choice(n, count, replace=False)] = True
            predicted = {split: [] for split in splits}
            for i, name in enumerate(teachers):
                target = full["train"][i][measured]
                if fit_ranks:
                    target = teacher_rank(target)
                for split, values in ridge_predictions(name, True, measured, target, bags).items():
                    predicted[split].append(values)
            for split in splits:
                values = predicted[split]
                if split != "train":  # scored in one call after the training texts
                    values = [np.concatenate([predicted["train"][i], v]) for i, v in enumerate(values)]
                certainties = [teacher_rank(v)[-len(splits[split]["gold"]):] for v in values]
                results[split].append(selection(certainties, splits[split]["gold"]))
        # How often one run falls more than 0.5 point below full MC on the same texts.
        cells = [f"{split} {np.mean(v):.4f} ± {np.std(v):.4f} [{np.min(v):.3f}, {np.max(v):.3f}] "
                 f"({np.mean(np.array(v) < reference[split] - 0.005):.0%} of draws > 0.5 below full MC)"
                 for split, v in results.items()]
        target = "ranks" if fit_ranks else "values"
        print(f"  share {share:.0%} ({count} texts), fitted to the {target}, {bags} bag(s): " + ", ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/selection_analysis.py runs/<sweep>/signals/<method>")
    main(Path(sys.argv[1]))
