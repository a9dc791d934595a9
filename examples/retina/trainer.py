#!/usr/bin/env python3
"""Civic's example trainer for DP-SGD jobs: a small model of referable diabetic retinopathy
from 32x32 screening photographs, written with numpy only.

A partner names this program in its partner.toml; the agent runs it once per round, in the
directory of partner.toml, without a shell:

    [datasets.trainers.retina-spots]
    command = ["python3", "trainer.py", "--extract", "retina.csv"]

It reads the round on standard input, as JSON:

    {"dataset": "retina", "trainer": "retina-spots", "iteration": 0,
     "parameters": [65 numbers], "clip": 1.0, "examples_per_resident": 1}

and prints the sum of its examples' gradients, each clipped to L2 norm `clip`, and how many
examples it used:

    {"examples": 1800, "gradient_sum": [65 numbers]}

The agent checks the output (length, norm), encodes it, adds its share of the noise and
masks it; nothing else leaves the partner. With `--per-example` it prints each example's
gradient instead, unclipped, with its resident, and the agent clips them itself:

    {"gradients": [{"resident": "p0-17", "gradient": [65 numbers]}, ...]} The extract is a CSV (pid, age, sex,
referable, image) with the photographs beside it as a NumPy array of shape (n, 32, 32),
written by `civic-agent synth --dataset retina`.

The model is a logistic regression on 64 features a partner computes from each photograph:
how far the most prominent pixel of each 4x4 block stands out from its 5x5 neighbourhood
(lesion-like spots stand out; the smooth fundus, the vessels and the noise much less), and
an intercept. `--evaluate FILE` scores a
parameter vector (a JSON list) on the extract instead, printing its AUC and accuracy.
"""

import argparse
import csv
import json
import sys

import numpy as np

SIDE = 32
BLOCK = 4
PARAMETERS = (SIDE // BLOCK) ** 2 + 1


def load(extract, with_residents=False):
    """The photographs (n, 32, 32) as floats in [0, 1], the outcomes (n,) as 0/1, and with
    `with_residents` the residents' pseudonyms."""
    with open(extract, newline="") as f:
        rows = list(csv.DictReader(f))
    images = np.load(extract.rsplit(".", 1)[0] + ".npy")
    order = [int(r["image"]) for r in rows]
    outcome = np.array([1.0 if r["referable"] == "true" else 0.0 for r in rows])
    loaded = (images[order].astype(np.float64) / 255.0, outcome)
    return loaded + ([r["pid"] for r in rows],) if with_residents else loaded


def features(images):
    """Each photograph's strongest spot, block by block, and an intercept: (n, 65). A pixel's
    spot response is how far it stands out from its 5x5 neighbourhood beyond what a vessel
    or the noise does; the camera's black border is left out."""
    n = images.shape[0]
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)), mode="constant")
    local = np.zeros_like(images)
    inside = np.ones_like(images, dtype=bool)
    for dy in range(5):
        for dx in range(5):
            window = padded[:, dy : dy + SIDE, dx : dx + SIDE]
            local += window
            inside &= window > 0
    response = np.where(inside, np.abs(images - local / 25.0), 0.0)
    spots = np.clip((response - 0.11) / 0.06, 0.0, 1.0)
    blocks = spots.reshape(n, SIDE // BLOCK, BLOCK, SIDE // BLOCK, BLOCK).max(axis=(2, 4))
    return np.hstack([np.ones((n, 1)), blocks.reshape(n, -1)])


def gradients(x, y, theta):
    """Each example's log-loss gradient (p - y) x: (n, 65)."""
    p = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -30.0, 30.0)))
    return (p - y)[:, None] * x


def clipped_gradient_sum(x, y, theta, clip):
    """The sum over examples of the log-loss gradient, each clipped to `clip`."""
    per_example = gradients(x, y, theta)
    norms = np.linalg.norm(per_example, axis=1)
    scale = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return (per_example * scale[:, None]).sum(axis=0)


def auc(scores, outcome):
    """The chance a random positive scores above a random negative (ties count a half)."""
    pos, neg = scores[outcome == 1], scores[outcome == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extract", required=True, help="the screening CSV")
    parser.add_argument("--evaluate", help="a JSON file of parameters to score instead")
    parser.add_argument(
        "--per-example",
        action="store_true",
        help="print each example's gradient and resident for the agent to clip",
    )
    args = parser.parse_args()
    images, outcome, residents = load(args.extract, with_residents=True)
    x = features(images)
    if args.evaluate:
        with open(args.evaluate) as f:
            theta = np.array(json.load(f), dtype=np.float64)
        scores = x @ theta
        accuracy = float(((scores > 0) == (outcome == 1)).mean())
        print(json.dumps({"auc": auc(scores, outcome), "accuracy": accuracy}))
        return 0
    round_ = json.load(sys.stdin)
    theta = np.array(round_["parameters"], dtype=np.float64)
    if theta.shape != (PARAMETERS,):
        print(f"this trainer's model has {PARAMETERS} parameters, not {theta.size}", file=sys.stderr)
        return 2
    # Every example is used (one photograph per resident here): dropping some to make room
    # for others would let one resident displace another.
    if args.per_example:
        each = gradients(x, outcome, theta)
        out = [{"resident": r, "gradient": g.tolist()} for r, g in zip(residents, each)]
        json.dump({"gradients": out}, sys.stdout)
        return 0
    total = clipped_gradient_sum(x, outcome, theta, float(round_["clip"]))
    json.dump({"examples": len(outcome), "gradient_sum": total.tolist()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
