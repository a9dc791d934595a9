#!/usr/bin/env python3
"""The DP-SGD eye-photo job's accuracy at epsilon = 1 and 4 (delta = 1e-6) for the whole job.

Four GP federations' synthetic screening photographs (1,500 to 1,800 each, as
`client-sdk/tests/trainer.rs` writes them) and 3,000 held-out ones, from `civic-agent synth
--dataset retina`; the example trainer's model and steps (`examples/retina/trainer.py`: 65
parameters, clip 1, learning rate 8, 20 rounds), each round's gradient sum and example count
noised as the partners' shares add up: each share sized so that 2 honest partners' alone
meet the job's rho for the plan's L2 sensitivity (sqrt(1 + 1/4) clips for one resident), so
all 4 shares together are sqrt(4/2) times the central sigma; Gaussian, 10 seeds. Against the same
steps without noise: the held-out AUC gap and the mean |parameter difference|.

    cargo build -p civic-client-sdk --bin civic-agent
    python3 benches/retina_noise.py [path/to/civic-agent]

A model of the noise, not the rounds themselves: `client-sdk/tests/trainer.rs` runs the job
through a real coordinator and agents (at a large rho, to check the pipeline, not the noise).
"""

import os
import subprocess
import sys
import tempfile

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "examples", "retina"))
import trainer  # noqa: E402

ITERATIONS, RATE, CLIP = 20, 8.0, 1.0
PARTNERS, HONEST = 4, 2
# rho for the whole job at epsilon = 1 and 4, delta = 1e-6 (as benches/learning.rs converts).
JOBS = [(1, 0.0244), (4, 0.311)]


def steps(x, y, sigma, rng):
    theta = np.zeros(trainer.PARAMETERS)
    for _ in range(ITERATIONS):
        g = trainer.clipped_gradient_sum(x, y, theta, CLIP)
        n = float(len(y))
        if sigma > 0:
            g = g + rng.normal(0.0, sigma, g.shape)
            n = n + rng.normal(0.0, sigma / (CLIP / 2))
        theta = theta - RATE * g / max(n, 1.0)
    return theta


def main():
    agent = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "target", "debug", "civic-agent")
    partners = ["gp-north", "gp-central", "gp-south", "gp-east"]
    with tempfile.TemporaryDirectory() as d:
        for i, p in enumerate(partners):
            subprocess.run([agent, "synth", "--dataset", "retina", "--partner", p,
                            "--out", f"{d}/{p}.csv", "--residents", str(1500 + 100 * i)],
                           check=True, stdout=subprocess.DEVNULL)
        subprocess.run([agent, "synth", "--dataset", "retina", "--partner", "gp-west", "--seed", "7",
                        "--out", f"{d}/held-out.csv", "--residents", "3000"],
                       check=True, stdout=subprocess.DEVNULL)
        data = [trainer.load(f"{d}/{p}.csv") for p in partners]
        held_images, held_y = trainer.load(f"{d}/held-out.csv")
    x = np.vstack([trainer.features(images) for images, _ in data])
    y = np.concatenate([outcome for _, outcome in data])
    held_x = trainer.features(held_images)
    exact = steps(x, y, 0.0, None)
    base = trainer.auc(held_x @ exact, held_y)
    print(f"{len(y)} photographs, {ITERATIONS} rounds; held-out AUC without noise {base:.4f}")
    print("| epsilon | rho | sigma a round | mean AUC gap | largest | mean |parameter diff| |")
    print("|---:|---:|---:|---:|---:|---:|")
    for epsilon, rho in JOBS:
        central = np.sqrt(1.25) * CLIP / np.sqrt(2 * rho / ITERATIONS)
        sigma = central * np.sqrt(PARTNERS / HONEST)
        gaps, diffs = [], []
        for seed in range(10):
            theta = steps(x, y, sigma, np.random.default_rng(seed))
            gaps.append(base - trainer.auc(held_x @ theta, held_y))
            diffs.append(np.abs(theta - exact).mean())
        print(f"| {epsilon} | {rho} | {sigma:.1f} | {np.mean(gaps):.4f} | {np.max(gaps):.4f} | {np.mean(diffs):.3f} |")


if __name__ == "__main__":
    main()
