"""Grey values under a Bernoulli "likelihood" and under proper ones, on the embedded digits.

The digits hold 17 grey levels, scaled to k/16 in [0, 1]. A Bernoulli cross-entropy on such
values, sum_i x_i log lambda_i + (1 - x_i) log(1 - lambda_i), is at most 0 for every image and
is no log-density: per pixel, its exponential integrates over [0, 1] to 1 / C(lambda) < 1/2,
where C is the continuous Bernoulli's normaliser (Loaiza-Ganem & Cunningham 2019). elbox
refuses it; this script forces it (its data check replaced by a no-op, here only) to show the
numbers, next to the continuous Bernoulli (a density on [0, 1]) and, as pmfs on the 17 levels,
the binomial, discretized logistic and categorical likelihoods.

Each model is trained by ``elbox.train`` with the same small settings and seed; log p(x) is
estimated on the whole test split by ``elbox.evaluation.log_likelihood`` (IWAE with K particles).
For the Bernoulli model the script also integrates, by the midpoint rule on 10,000 points, its
per-pixel "density" at the decoded lambda of each test image's posterior mean: the log of the
mass it puts on [0, 1]^64.

    python bench/grey_likelihood.py --epochs 30 --k 1000
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import environment

import elbox
from elbox.evaluation import log_likelihood
from elbox.families import center
from elbox.likelihoods import Bernoulli

LIKELIHOODS = {
    "bernoulli (forced)": "a cross-entropy: no density, no pmf",
    "continuous-bernoulli": "a density on [0, 1]^64",
    "gaussian-pixel": "a density on R^64",
    "binomial": "a pmf on the 17^64 grid",
    "logistic": "a pmf on the 17^64 grid",
    "categorical": "a pmf on the 17^64 grid",
}


def _no_check(self: Bernoulli, x: torch.Tensor, name: str = "training") -> None:
    """The forcing: the Bernoulli's refusal of grey values, switched off in this process only."""


@torch.no_grad()
def bernoulli_log_mass(model: elbox.VAE, x: torch.Tensor, points: int = 10_000) -> torch.Tensor:
    """log of the integral over [0, 1]^X of exp(-BCE(x; lambda)) at the decoded lambda, per image ``[N]``.

    The integral factorises over pixels; each pixel's is taken by the midpoint rule.
    """
    logits = model.decoder(center(model.encode(x)))  # [N, X]
    grid = (torch.arange(points, dtype=torch.float64) + 0.5) / points  # [G]
    log_f = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits.double()[..., None].expand(*logits.shape, points), grid.expand(*logits.shape, points), reduction="none"
    )  # [N, X, G]
    return (torch.logsumexp(log_f, -1) - torch.log(torch.tensor(float(points)))).sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--k", type=int, default=1000, help="particles of the log p(x) estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results" / "grey_likelihood.json"
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    Bernoulli.check = _no_check
    print(f"digits, {args.epochs} epochs, latent {args.latent_dim}, hidden {args.hidden}, seed {args.seed}, "
          f"IWAE-{args.k} on the test split; {environment()}")  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory(prefix="elbox-grey-") as tmp:
        for label, what in LIKELIHOODS.items():
            name = label.split()[0]
            started = time.perf_counter()
            run = elbox.train(
                data="digits", likelihood=name, epochs=args.epochs, latent_dim=args.latent_dim,
                hidden=(args.hidden,), seed=args.seed, out=Path(tmp) / name, progress=False,
            )  # fmt: skip
            x = elbox.data.load_dataset("digits").test
            ll = log_likelihood(run.model, x, k=args.k, seed=args.seed)
            r = {
                "what": what,
                "test_log_px": ll.mean,
                "test_log_px_se": ll.se,
                "max_image_log_px": ll.values.max().item(),
                "test_elbo": run.summary["test"]["elbo"],
                "seconds": time.perf_counter() - started,
            }
            if name == "bernoulli":
                mass = bernoulli_log_mass(run.model, x)
                r["log_mass_on_unit_cube"] = {"mean": mass.mean().item(), "max": mass.max().item()}
            results[label] = r
            print(
                f"{label:<22} log p(x) {r['test_log_px']:8.2f} ± {r['test_log_px_se']:.2f}  (max over images "
                f"{r['max_image_log_px']:7.2f})  ELBO {r['test_elbo']:8.2f}  {r['seconds']:5.1f} s  {what}"
            )
            if "log_mass_on_unit_cube" in r:
                m = r["log_mass_on_unit_cube"]
                print(f"{'':<22} log of its mass on [0, 1]^64: mean {m['mean']:.2f}, max {m['max']:.2f} "
                      f"(a density has 0; 64 log(1/2) = {-64 * 0.6931:.2f})")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "environment": environment(),
                                     "results": results}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
