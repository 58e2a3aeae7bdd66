"""Single imputation of a table: elbox (MIWAE) against mean, IterativeImputer and KNNImputer.

scikit-learn's breast-cancer table (569 rows x 30 continuous columns), standardised; a share
``rate`` of its entries is removed completely at random (MCAR; a row may lose every entry).
Each method fills the removed entries; the score is their RMSE in standardised units
(Mattei & Frellsen 2019, "MIWAE", section 4.3, use this table and this protocol).

elbox trains a VAE on the incomplete table with the IWAE bound on the observed entries
(``elbox.training.train(data=FILE.csv, objective="iwae", k=K, estimator="dreg", all_rows=True)``:
the MIWAE objective, the encoder reading the zero-filled row and its mask), on every row of the
table (``--held-out``: its 80% training rows only), and fills every row with the
importance-weighted conditional mean over ``--impute-k`` draws of q (``elbox.impute.impute_table``).
The baselines see all 569 rows too.

    python bench/tables_impute.py --rates 0.2                      # about 30 minutes on 2 busy cores
    python bench/tables_impute.py --rates 0.2 --seeds 1 --first-seed 2   # seed 2 alone (one process per seed)
    python bench/tables_impute.py --seeds 1 --rates 0.2 --epochs 100   # a quick look
    python bench/tables_impute.py --rates 0.2 --ema 0.999 --ema-start 200   # the weights' moving average
"""

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, set_threads, write_results

from elbox.impute import impute_table
from elbox.training import train

RESULTS = Path(__file__).resolve().parent / "results" / "tables_impute.json"
METHODS = ("elbox", "mean", "iterative", "knn")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--epochs", type=int, default=600)
    p.add_argument("--k", type=int, default=50, help="particles of the IWAE bound in training (20: 0.013 worse)")
    p.add_argument("--impute-k", type=int, default=1000, help="draws of q per row when imputing")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--estimator", default="dreg", help="the IWAE bound's gradient estimator (reparam, stl, dreg)")
    p.add_argument("--ema", type=float, default=None, help="decay of the weights' moving average (train --ema)")
    p.add_argument("--ema-start", type=int, default=0, help="epochs before the average starts (train --ema-start)")
    p.add_argument("--noise-rank", type=int, default=0,
                   help="rank of the continuous columns' correlated noise (train --noise-rank; 0: independent)")
    p.add_argument("--held-out", action="store_true", help="train on the 80%% training rows only (not --all-rows)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=RESULTS)
    return p.parse_args()


def breast_cancer() -> np.ndarray:
    """The table ``[569, 30]``, each column standardised to mean 0 and sd 1."""
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data
    return (x - x.mean(0)) / x.std(0)


def knock_out(x: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """``x`` with each entry removed (NaN) with probability ``rate``, independently (MCAR)."""
    gone = np.random.default_rng(seed).random(x.shape) < rate
    return np.where(gone, np.nan, x)


def elbox_fill(holed: np.ndarray, seed: int, args: argparse.Namespace, folder: Path) -> np.ndarray:
    names = [f"c{j}" for j in range(holed.shape[1])]
    frame = pd.DataFrame(holed, columns=names)
    path = folder / "holed.csv"
    frame.to_csv(path, index=False)
    run = train(data=str(path), out=str(folder / "run"), overwrite=True, progress=False, seed=seed,
                epochs=args.epochs, objective="iwae", k=args.k, latent_dim=args.latent_dim,
                hidden=tuple(int(h) for h in args.hidden.split(",")), batch_size=args.batch_size,
                lr=args.lr, estimator=args.estimator, all_rows=not args.held_out, ema=args.ema,
                ema_start=args.ema_start, noise_rank=args.noise_rank)  # fmt: skip
    return impute_table(run, frame, k=args.impute_k, seed=seed)[names].to_numpy(dtype=float)


def baseline_fill(method: str, holed: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (unlocks IterativeImputer)
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    imputer = {"mean": SimpleImputer(strategy="mean"), "knn": KNNImputer(n_neighbors=5),
               "iterative": IterativeImputer(max_iter=10, random_state=seed)}[method]  # fmt: skip
    with warnings.catch_warnings():  # IterativeImputer warns when it stops at max_iter
        warnings.simplefilter("ignore")
        return imputer.fit_transform(holed)


def rmse(filled: np.ndarray, x: np.ndarray, gone: np.ndarray) -> float:
    return float(np.sqrt(np.mean((filled[gone] - x[gone]) ** 2)))


def main() -> None:
    args = parse()
    set_threads(args.threads)
    x = breast_cancer()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in args.rates:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                holed = knock_out(x, rate, 1000 + seed)
                gone = np.isnan(holed)
                for method in args.methods:
                    torch.manual_seed(seed)
                    start = time.perf_counter()
                    if method == "elbox":
                        filled = elbox_fill(holed, seed, args, Path(tmp))
                    else:
                        filled = baseline_fill(method, holed, seed)
                    seconds = time.perf_counter() - start
                    assert np.allclose(filled[~gone], x[~gone], atol=1e-4), f"{method} changed observed values"
                    rows.append({"rate": rate, "seed": seed, "method": method, "rmse": rmse(filled, x, gone),
                                 "seconds": seconds})  # fmt: skip
                    print(f"rate {rate} seed {seed} {method:9s} RMSE {rows[-1]['rmse']:.4f} ({seconds:.1f} s)",
                          flush=True)  # fmt: skip
    summary = {}
    for rate in args.rates:
        for method in args.methods:
            r = [row for row in rows if row["rate"] == rate and row["method"] == method]
            e = np.array([row["rmse"] for row in r])
            summary[f"{rate}/{method}"] = {"rmse_mean": float(e.mean()),
                                           "rmse_se": float(e.std(ddof=1) / np.sqrt(len(e))) if len(e) > 1 else None,
                                           "seconds_mean": float(np.mean([row["seconds"] for row in r]))}  # fmt: skip
            print(f"rate {rate} {method:9s} RMSE {e.mean():.4f} over {len(e)} seeds")
    write_results(args, {"runs": rows, "summary": summary, "environment": environment()})


if __name__ == "__main__":
    main()
