"""elbox's Bayesian fits against posteriordb's gold-standard draws, family by family.

For each posterior in ../shared/data/posteriordb and each family (diagonal, full-rank, flow,
auto): fit with `elbox.bayes.fit`, draw 10,000 times from q, and compare with the 10,000
reference draws on every quantity both have (constrained space): the worst error of the
means in reference sds, the range of the sd ratios q / reference, the mean 1-Wasserstein
distance per quantity in reference sds, PSIS k-hat (largest of the verdict's sets), the
verdict, whether the targets hold (every mean within 0.1 sd, every sd within 10%), and wall
time (start search, fit and diagnostics; for auto, every family it tried) with the log-density
evaluations of every phase (``Posterior.phases``), which the machine's load does not change.
``laplace`` is N(mode, H^-1) with no VI (not applicable without a mode).

    python bench/bayes_posteriordb.py --out bench/results/bayes_posteriordb.json

Ends with `RESULT trusted=... trusted_and_failing=...`: the verdict must never trust a fit
whose targets fail (trusted_and_failing=0).
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from elbox import bayes
from elbox.errors import ElboxError

NAMES = ("eight_schools_noncentered", "eight_schools_centered", "kilpisjarvi", "blr", "diamonds",
         "low_dim_gauss_mix", "hmm_example")  # fmt: skip
FAMILIES = ("laplace", "diagonal", "fullrank", "flow", "auto")


def run_one(reference: bayes.Reference, family: str, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    try:
        posterior = bayes.fit(reference.model, reference.data, family=family, steps=args.steps, seed=args.seed,
                              progress=False, optimizer=args.optimizer)  # fmt: skip
    except ElboxError as e:  # laplace without a mode
        return {"posterior": reference.name, "family": family, "skipped": str(e)}
    diagnostics = posterior.diagnostics()
    seconds = time.perf_counter() - t0
    c = bayes.compare(posterior.columns(10_000, seed=args.seed + 1), reference.draws)
    index = [diagnostics.names.index(n) for n in c.names]
    return {
        "posterior": reference.name, "family": family, "chosen": posterior.family_name,
        "steps": len(posterior.elbo_trace), "converged": posterior.converged, "start": posterior.start.method,
        "elbo": posterior.elbo, "seconds": seconds, "khat": diagnostics.khat, "verdict": diagnostics.verdict,
        "reasons": diagnostics.reasons, "passes": c.passes(), "max_mean_error": float(np.abs(c.mean_error).max()),
        "sd_ratio_min": float(c.sd_ratio.min()), "sd_ratio_max": float(c.sd_ratio.max()),
        "mean_w1": float(c.wasserstein.mean()), "attempts": posterior.attempts, "phases": posterior.phases,
        "evaluations": sum(p["evaluations"] for p in posterior.phases),
        "iterations": posterior.options.get("iterations", len(posterior.elbo_trace)),
        "quantities": {n: {"mean_error": float(c.mean_error[j]), "sd_ratio": float(c.sd_ratio[j]),
                           "w1": float(c.wasserstein[j]), "psis_shift": float(diagnostics.mean_shift[i]),
                           "psis_shift_se": float(diagnostics.mean_shift_se[i]),
                           "psis_sd_ratio": float(diagnostics.sd_ratio[i]),
                           "psis_sd_ratio_se": float(diagnostics.sd_ratio_se[i])}
                       for j, (n, i) in enumerate(zip(c.names, index, strict=True))},
    }  # fmt: skip


def row(r: dict) -> str:
    if "skipped" in r:
        return f"| {r['posterior']} | {r['family']} | - | no mode: not applicable | | | | | | | |"
    family = r["family"] + (f" ({r['chosen']})" if r["family"] == "auto" else "")
    return (f"| {r['posterior']} | {family} | {r['iterations']} | {r['max_mean_error']:.3f} | "
            f"{r['sd_ratio_min']:.3f} - {r['sd_ratio_max']:.3f} | {r['mean_w1']:.3f} | {max(r['khat']):.2f} | "
            f"{r['verdict']} | {'yes' if r['passes'] else 'no'} | {r['evaluations']:,} | "
            f"{r['seconds']:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posteriordb", default=os.environ.get("ELBOX_POSTERIORDB", "../shared/data/posteriordb"))
    parser.add_argument("--names", default=",".join(NAMES))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--steps", type=int, default=10_000, help="cap on steps per fit (the rule usually stops first)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--optimizer", default=None, help="lbfgs or adam (default: bayes.fit's choice per family)")
    parser.add_argument("--out", default=None, help="JSON file for every figure")
    args = parser.parse_args()
    if not Path(args.posteriordb).is_dir():
        raise SystemExit(f"no posteriordb folder at {args.posteriordb}: pass --posteriordb DIR")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}")
    print("| posterior | family | iterations | max mean error (ref sd) | sd ratio | mean W1 (ref sd) | k-hat (max) | "
          "verdict | targets met | log p evals | wall s |\n" + "| --- " * 11 + "|")  # fmt: skip
    results = []
    for name in args.names.split(","):
        reference = bayes.load(name, args.posteriordb)
        for family in args.families.split(","):
            results.append(run_one(reference, family, args))
            print(row(results[-1]), flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    results = [r for r in results if "skipped" not in r]
    trusted = [r for r in results if r["verdict"] == "trust"]
    bad = [f"{r['posterior']}/{r['family']}" for r in trusted if not r["passes"]]
    missed = [f"{r['posterior']}/{r['family']}" for r in results if r["passes"] and r["verdict"] != "trust"]
    print(f"RESULT trusted={len(trusted)}/{len(results)} trusted_and_failing={len(bad)} {bad} "
          f"passing_but_not_trusted={len(missed)} {missed}")  # fmt: skip


if __name__ == "__main__":
    main()
