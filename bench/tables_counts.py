"""Count tables: the likelihood ``auto`` picks, and log p(x) of Poisson, negative-binomial, beta-binomial and Gaussian
decoders.

Two tables of counts:

  simulated  N rows, C columns from a known latent negative-binomial model: z ~ N(0, I_2),
             x_j | z ~ NB(mean exp(a_j + w_j . z), inverse dispersion theta = ``--theta``), so the
             data are over-dispersed beyond the Poisson and the NB decoder should learn theta;
  digits     scikit-learn's bundled 8x8 digits (1797 rows): each pixel is the count of on-pixels
             in a 4x4 block of the original bitmap, 0..16 (a real count table, bounded and
             under-dispersed at the extremes; its constant columns dropped).

For each the columns are declared ``count:poisson``, ``count:negative-binomial``, ``count:beta-binomial:N``
(bounded counts: N = 16 on digits, the column's largest value on the simulated table) or ``continuous``
(the Gaussian), the same VAE is trained, and log p(x) is estimated on the test
split by importance sampling with K draws of q (the IWAE bound, ``--k``), in nats per row. The
Gaussian decoder is a density: its log p(x) is put in the counts' units (the standardisation's
log-Jacobian, -sum_j log sd_j, added) and is then comparable with a pmf only as the density of
unit-wide bins, which is what it is for whole numbers.

    python bench/tables_counts.py            # about 10 minutes on 2 busy cores
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "tables_counts.json"
DECODERS = {"poisson": "count:poisson", "negative-binomial": "count:negative-binomial", "gaussian": "continuous",
            "beta-binomial": "count:beta-binomial", "auto": None}  # beta-binomial:N, N = 16 for digits (a 4x4 block),
# else the column's largest; auto: every column's likelihood inferred (what a user gets without a schema)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--columns", type=int, default=10)
    p.add_argument("--theta", type=float, default=2.0, help="the simulated inverse dispersion")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--hidden", default="64,64")
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tables", nargs="+", default=["simulated", "digits"], choices=["simulated", "digits"])
    p.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=RESULTS)
    return p.parse_args()


def simulated(args: argparse.Namespace) -> pd.DataFrame:
    rng = np.random.default_rng(args.seed)
    z = rng.normal(size=(args.rows, 2))
    a, w = rng.uniform(0.5, 2.5, args.columns), rng.normal(0, 0.7, (args.columns, 2))
    mu = np.exp(a + z @ w.T)  # [N, C]
    # NB(mu, theta) as the Gamma(theta, theta / mu) mixture of Poissons
    x = rng.poisson(rng.gamma(args.theta, mu / args.theta))
    return pd.DataFrame(x, columns=[f"n{j}" for j in range(args.columns)])


def digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).data.astype(int)
    return frame.loc[:, frame.nunique() > 1]


@torch.no_grad()
def log_px(run, k: int) -> tuple[float, float]:
    """The IWAE_k estimate of log p(x) on the test split, mean and standard error over rows."""
    from elbox.runs import load_splits

    _, splits = load_splits(run.config)
    x, model = splits["test"], run.model
    torch.manual_seed(0)
    q = model.encode(x)
    z = q.sample((k,))  # [K, N, D]
    log_w = model.decode(z).log_prob(x) + model.prior_given().log_prob(z) - q.log_prob(z)  # [K, N]
    per_row = (torch.logsumexp(log_w, 0) - math.log(k)).double()
    jacobian = -sum(math.log(c.scale) for c in run.schema.columns if c.kind == "continuous")
    per_row = per_row + jacobian  # a Gaussian's density in the counts' units
    return per_row.mean().item(), (per_row.std() / math.sqrt(len(per_row))).item()


def fit(frame: pd.DataFrame, declared: dict, args: argparse.Namespace, tmp: Path):
    from elbox.training import train

    path, schema = tmp / "counts.csv", tmp / "schema.json"
    frame.to_csv(path, index=False)
    schema.write_text(json.dumps({"header": True, "columns": declared}))
    return train(data=str(path), schema=str(schema), out=str(tmp / "run"), overwrite=True, progress=False,
                 seed=args.seed, epochs=args.epochs, latent_dim=args.latent_dim,
                 hidden=tuple(int(h) for h in args.hidden.split(",")))  # fmt: skip


def main() -> None:
    args = parse()
    set_threads(args.threads)
    from elbox.data import infer_schema

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            frame = simulated(args) if name == "simulated" else digits()
            auto = sorted({c.spec for c in infer_schema(frame).columns})
            table = {"rows": len(frame), "columns": frame.shape[1], "auto": auto,
                     "mean": float(frame.to_numpy().mean()), "variance_over_mean":
                     float((frame.var() / frame.mean().clip(lower=1e-9)).mean())}  # fmt: skip
            print(name, table, flush=True)
            for decoder in args.decoders:
                spec = DECODERS[decoder]
                declared = dict.fromkeys(frame.columns, spec) if spec else {}
                if decoder == "beta-binomial":  # the bound of the whole table, so that no test row exceeds it
                    declared = {c: f"{spec}:{16 if name == 'digits' else int(frame[c].max())}" for c in frame.columns}
                start = time.perf_counter()
                run = fit(frame, declared, args, Path(tmp))
                mean, se = log_px(run, args.k)
                row = {"log_px": mean, "se": se, "seconds": time.perf_counter() - start}
                if decoder == "negative-binomial":
                    theta = run.model.likelihood.theta.detach()
                    row["theta"] = theta.tolist()
                table[decoder] = row
                print(name, decoder, {k: v for k, v in row.items() if k != "theta"},
                      "theta median", np.median(row.get("theta", [np.nan])), flush=True)  # fmt: skip
            results[name] = table
    if "simulated" in results:
        results["simulated"]["theta_true"] = args.theta
    write_results(args, results)


if __name__ == "__main__":
    main()
