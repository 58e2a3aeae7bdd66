"""Do two stochastic layers and a learned prior give better models? Test log p(x) of the zoo.

Four models on static binarized MNIST, trained by ``elbox.train`` with the same epochs, seed,
data, batch 100, Adam lr 1e-3 (single-particle ELBO) and nonlinearity (ReLU by default: with
tanh and PyTorch's default initialisation every model starts on a plateau where the decoder
ignores z, and a VampPrior model can stay there, collapsed, for the whole run), then log p(x) estimated by
``elbox.evaluation.log_likelihood`` (importance sampling, K = 5,000 draws from each model's own
encoder) on test images spread through the split; the same images serve every model, so the
differences carry paired standard errors:

    vae         784-200-200-50, N(0, I) prior (Burda et al. 2016's one-layer model)
    vae+vamp    the same with the VampPrior, 500 pseudo-inputs (Tomczak & Welling 2018)
    hvae        784-200-200-100-100-100-50, two stochastic layers (Burda et al. 2016)
    hvae+vamp   the same with the VampPrior over z2

Literature, static MNIST after long training (hundreds of epochs, KL warm-up, early
stopping): VAE about 88.6, VampPrior 85.57, two layers + VampPrior 83.19 nats (Tomczak &
Welling 2018, Table 2; their two-layer model orders inference the other way, q(z2|x) q(z1|x,z2)).
The claims checked: hvae beats vae, vae+vamp beats vae, hvae+vamp beats hvae.

    python bench/zoo_mnist.py --epochs 50 --test-points 1000
    python bench/zoo_mnist.py --epochs 1 --test-points 200 --json /tmp/zoo.json   # a smoke test
"""

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from common import BATCH_SIZE, DEFAULT_DATA_DIR, HIDDEN, LR, environment, load_binarized_mnist, write_results

import elbox
from elbox.evaluation import log_likelihood
from elbox.plots import spread

RESULTS = Path(__file__).resolve().parent / "results"

# name -> model options; latent_dim is z1's for the hvae, whose z2 (50) and widths (100, 100) are the defaults
MODELS = {
    "vae": {"latent_dim": 50},
    "vae+vamp": {"latent_dim": 50, "prior": "vamp"},
    "hvae": {"latent_dim": 100, "model": "hvae"},
    "hvae+vamp": {"latent_dim": 100, "model": "hvae", "prior": "vamp"},
}
CLAIMS = (("hvae", "vae"), ("vae+vamp", "vae"), ("hvae+vamp", "hvae"))


def _options(name: str, components: int) -> dict:
    options = dict(MODELS[name])
    if "prior" in options:
        options["prior"] = f"{options['prior']}:{components}"
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS), help=f"a comma list of {', '.join(MODELS)}")
    parser.add_argument("--components", type=int, default=500, help="the VampPrior's pseudo-inputs")
    parser.add_argument(
        "--activation", default="relu", help="the networks' nonlinearity; with tanh the VampPrior can stay collapsed"
    )
    parser.add_argument("--kl-warmup", type=int, default=0, help="epochs of KL warm-up (Tomczak & Welling use 100)")
    parser.add_argument("--test-points", type=int, default=1000, help="test images, evenly spread (sorted split)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: where elbox.train trains")
    parser.add_argument("--json", type=Path, default=RESULTS / "zoo_mnist.json")
    args = parser.parse_args()
    names = args.models.split(",")
    if unknown := [n for n in names if n not in MODELS]:
        sys.exit(f"error: unknown models {unknown}; choose from {', '.join(MODELS)}")
    sys.stdout.reconfigure(line_buffering=True)
    x_test = spread(load_binarized_mnist(args.data_dir).test, args.test_points)
    print(f"{args.epochs} epochs, seed {args.seed}, K={args.k} on {x_test.shape[0]} test images; {environment()}")
    results, per_point = {}, {}
    with tempfile.TemporaryDirectory(prefix="elbox-zoo-") as tmp:
        for name in names:
            started = time.perf_counter()
            run = elbox.train(
                data="binarized-mnist", data_dir=args.data_dir, hidden=HIDDEN, epochs=args.epochs,
                batch_size=BATCH_SIZE, lr=LR, seed=args.seed, kl_warmup=args.kl_warmup, device=args.device,
                activation=args.activation,
                out=Path(tmp) / name.replace("+", "-"), progress=False, **_options(name, args.components),
            )  # fmt: skip
            seconds = time.perf_counter() - started
            evaluated = time.perf_counter()
            ll = log_likelihood(run.model, x_test, k=args.k, seed=args.seed)
            per_point[name] = ll.values
            results[name] = {
                "model": run.model.config.to_dict(),
                "parameters": sum(p.numel() for p in run.model.parameters()),
                "epochs": run.summary["epochs"],
                "train_seconds": seconds,
                "epoch_seconds": run.summary["seconds"] / run.summary["epochs"],
                "test_elbo": run.summary["test"]["elbo"],
                "test_kl": run.summary["test"]["kl"],  # near 0: the posterior collapsed onto the prior
                "test_log_px": ll.mean,
                "test_log_px_stderr": ll.se,
                "median_ess": ll.ess.median().item(),
                "eval_seconds": time.perf_counter() - evaluated,
            }
            r = results[name]
            print(
                f"{name:<10} log p(x) {r['test_log_px']:8.2f} ± {r['test_log_px_stderr']:.2f}   "
                f"ELBO {r['test_elbo']:8.2f}   KL {r['test_kl']:6.2f}   median ESS {r['median_ess']:7.1f}   "
                f"{r['epochs']} epochs in {seconds:5.0f} s, log p(x) in {r['eval_seconds']:4.0f} s"
            )
            results["claims"] = _claims(per_point)
            write_results(args, results)  # after each model: an interrupted run keeps what it measured
    for claim, c in results["claims"].items():
        print(f"{claim}: {c['gain']:+.2f} ± {c['stderr']:.2f} nats (paired): {c['verdict']}")


def _claims(per_point: dict) -> dict:
    """For each claim (better, worse) with both measured: the paired gain in nats and its standard error."""
    claims = {}
    for better, worse in CLAIMS:
        if better in per_point and worse in per_point:
            diff = per_point[better] - per_point[worse]
            gain, se = diff.mean().item(), (diff.std() / math.sqrt(diff.shape[0])).item()
            verdict = "holds" if gain > 2 * se else ("fails" if gain < -2 * se else "not decided (within 2 SE)")
            claims[f"{better} > {worse}"] = {"gain": gain, "stderr": se, "verdict": verdict}
    return claims


if __name__ == "__main__":
    main()
