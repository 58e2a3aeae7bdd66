"""The ordering of Burda et al. (2016) on static binarized MNIST, at a stated budget.

The 784-200-200-50 tanh VAE trained with the ELBO, IWAE k=5, IWAE k=50 and IWAE k=50 with
DReG gradients (Tucker et al. 2018), each by ``elbox.train`` with the same epochs, seed and
data; then log p(x) estimated by IWAE with 5,000 particles on test images spread through the
split. Burda et al. report, after 3,280 epochs on dynamically binarized MNIST: VAE 86.76,
IWAE k=5 85.54, k=50 84.78 nats (test NLL).

    python bench/iwae_ordering.py --epochs 10 --test-points 1000
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import BATCH_SIZE, DEFAULT_DATA_DIR, HIDDEN, LATENT_DIM, LR, environment, load_binarized_mnist

import elbox
from elbox.bounds import iwae
from elbox.plots import spread

CONFIGS = {
    "VAE (ELBO)": {"objective": "elbo"},
    "IWAE k=5": {"objective": "iwae", "k": 5},
    "IWAE k=50": {"objective": "iwae", "k": 50},
    "IWAE k=50, DReG": {"objective": "iwae", "k": 50, "estimator": "dreg"},
}


@torch.no_grad()
def log_px(model: elbox.VAE, x: torch.Tensor, k: int = 5000, chunk: int = 500, batch: int = 100) -> torch.Tensor:
    """IWAE_k estimate of log p(x) per data point, ``[N]``, in particle chunks so memory stays bounded."""
    out = []
    for start in range(0, x.shape[0], batch):
        xb = x[start : start + batch]
        log_w = torch.cat([model.log_weights(xb, chunk) for _ in range(k // chunk)])  # [k, b]
        out.append(iwae(log_w))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--test-points", type=int, default=1000, help="test images, evenly spread (the split is sorted)"
    )
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "iwae_ordering.json")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    torch.manual_seed(args.seed)
    x_test = spread(load_binarized_mnist(args.data_dir).test, args.test_points)
    print(f"{args.epochs} epochs, seed {args.seed}, IWAE-5000 on {x_test.shape[0]} test images; {environment()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="elbox-iwae-") as tmp:
        for name, options in CONFIGS.items():
            started = time.perf_counter()
            run = elbox.train(
                data="binarized-mnist", data_dir=args.data_dir, latent_dim=LATENT_DIM, hidden=HIDDEN,
                epochs=args.epochs, batch_size=BATCH_SIZE, lr=LR, seed=args.seed,
                out=Path(tmp) / name.replace(" ", "_").replace(",", ""), progress=False, **options,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            torch.manual_seed(args.seed)
            ll = log_px(run.model, x_test)
            results[name] = {
                "options": options,
                "train_seconds": seconds,
                "test_elbo": run.summary["test"]["elbo"],
                "test_log_px": ll.mean().item(),
                "test_log_px_stderr": (ll.std() / math.sqrt(ll.shape[0])).item(),
            }
            r = results[name]
            print(
                f"{name:<18} log p(x) {r['test_log_px']:8.2f} ± {r['test_log_px_stderr']:.2f}   "
                f"ELBO {r['test_elbo']:8.2f}   {seconds:6.0f} s"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": vars(args) | {"data_dir": str(args.data_dir), "json": str(args.json)},
                                     "results": results}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
