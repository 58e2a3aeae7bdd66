"""Synthetic tables: elbox's samples against a Gaussian-mixture synthesizer (and SDV's TVAE when given).

Two tables bundled with scikit-learn (no network): breast cancer (569 rows, 30 continuous
columns and the binary diagnosis) and wine (178 rows: 11 continuous columns, two whole-number
columns that elbox reads as counts, magnesium and proline, and the categorical cultivar, 3
levels). Each is cut into real-train (70%, stratified) and real-test rows; every synthesizer
sees only real-train and draws as many rows. Scores, against real-train:

    KS       the two-sample Kolmogorov-Smirnov statistic per column, averaged (lower is better)
    corr     mean |r_real - r_synth| over the column pairs j < l, Pearson on the columns' codes
    TSTR     accuracy on real-test of a random forest trained on the synthetic rows (label: the
             diagnosis, the cultivar), beside TRTR, the same forest trained on real-train
    DCR      distance to closest record: each synthetic row's Euclidean distance to its nearest
             real-train row (columns standardised by real-train's mean and sd, the label as its
             code); reported as the median, beside the median of the real-test rows' distances to
             real-train (fresh rows of the same data: the reference), and as the share of synthetic
             rows nearer than the real-test rows' 5% quantile (5% for a synthesizer that copies
             nothing; higher: rows closer to the training rows than new data would be)

Synthesizers: elbox (``train(data=FILE.csv, all_rows=True)``, every real-train row, then
``impute.sample_table``, z drawn from the prior, as ``elbox-aggregate`` from the aggregate
posterior (a training row's q(z | x)), and as ``elbox-gmm`` from a Gaussian mixture fit to it,
the same run), a Gaussian mixture
on the standardised columns (the categorical one-hot; components chosen by BIC among 1..10;
levels by argmax, counts rounded), and SDV's TVAE if ``--sdv-python`` names a Python that has
``sdv`` (it runs there, in its own process, never a dependency of elbox). ``bootstrap`` is a
reference, not a synthesizer: real-train's rows drawn with replacement, as many as it has, so
its KS and corr are what n rows of the data's own (empirical) distribution score against it:
the metrics' noise floor (its DCR is 0: the rows are copies).

    python bench/tables_synth.py                                   # about 10 minutes on 2 busy cores
    python bench/tables_synth.py --sdv-python ~/sdvenv/bin/python  # with TVAE
    python bench/tables_synth.py --methods elbox --power yeo-johnson  # elbox, continuous columns power-transformed
    python bench/tables_synth.py --methods elbox --power skewed       # only the skewed ones (schema file)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import set_threads, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "tables_synth.json"
SUMMARY = ("ks_mean", "corr_mad", "tstr", "trtr", "seconds", "dcr_median", "dcr_test_median", "dcr_close")
TVAE = """
import sys, pandas as pd
from sdv.metadata import Metadata
from sdv.single_table import TVAESynthesizer
real = pd.read_csv(sys.argv[1])
label = sys.argv[4]
real[label] = real[label].astype(str)
meta = Metadata.detect_from_dataframes({"t": real})
meta.update_column(column_name=label, sdtype="categorical", table_name="t")
s = TVAESynthesizer(meta, epochs=int(sys.argv[3]))
s.fit({"t": real})
out = s.sample(len(real))
out = out["t"] if isinstance(out, dict) else out
out.to_csv(sys.argv[2], index=False)
"""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", nargs="+", default=["breast-cancer", "wine"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--methods", nargs="+", default=["elbox", "gmm", "tvae"], help="tvae only with --sdv-python")
    p.add_argument("--sdv-python", default=None, help="a Python with sdv installed, to run TVAE")
    p.add_argument("--tvae-epochs", type=int, default=300)
    p.add_argument("--noise-rank", type=int, default=0, help="elbox: the continuous columns' correlated noise rank")
    every = "elbox trains on every real-train row (--no-all-rows: holds out 10%% + 10%%, as a run does)"
    p.add_argument("--all-rows", action=argparse.BooleanOptionalAction, default=True, help=every)
    power = "elbox's continuous columns: none, yeo-johnson (every one), skewed (|skewness| > 0.5, by schema file)"
    p.add_argument("--power", default="none", choices=["none", "yeo-johnson", "skewed"], help=power)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=RESULTS)
    return p.parse_args()


def load(name: str) -> tuple[pd.DataFrame, str, dict]:
    """The table, its label column and the kinds elbox is told (the rest inferred)."""
    from sklearn.datasets import load_breast_cancer, load_wine

    if name == "breast-cancer":
        frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "benign"})
        return frame, "benign", {}
    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame["cultivar"] = frame["cultivar"].map({0: "a", 1: "b", 2: "c"})
    return frame, "cultivar", {"cultivar": "categorical"}


def elbox_synth(train_frame: pd.DataFrame, declared: dict, seed: int, args: argparse.Namespace, tmp: Path):
    from elbox.aggregate import LATENTS
    from elbox.impute import sample_table
    from elbox.training import train

    path, schema = tmp / "real.csv", tmp / "schema.json"
    train_frame.to_csv(path, index=False)
    power = getattr(args, "power", "none")
    if power == "skewed":  # per column, in the schema file: the skewed continuous ones
        declared = declared | {c: "continuous:yeo-johnson" for c in skewed(train_frame, declared)}
    schema.write_text(json.dumps({"header": True, "columns": declared}))
    run = train(data=str(path), schema=str(schema), out=str(tmp / "run"), overwrite=True, progress=False, seed=seed,
                epochs=args.epochs, latent_dim=args.latent_dim, hidden=tuple(int(h) for h in args.hidden.split(",")),
                batch_size=32, all_rows=args.all_rows, power="none" if power == "skewed" else power,
                noise_rank=getattr(args, "noise_rank", 0))  # fmt: skip
    kinds = {c.name: c.kind for c in run.schema.columns}
    draws = {latent: sample_table(run, len(train_frame), seed, latent)[list(train_frame.columns)] for latent in LATENTS}
    return draws, kinds


def skewed(frame: pd.DataFrame, declared: dict, limit: float = 0.5) -> list[str]:
    """The numeric columns, not declared and not whole numbers (counts), whose |sample skewness| > limit."""
    numeric = [c for c in frame.columns if c not in declared and frame[c].dtype.kind == "f"]
    return [c for c in numeric if (frame[c] != frame[c].round()).any() and abs(frame[c].skew()) > limit]


def gmm_synth(train_frame: pd.DataFrame, label: str, seed: int) -> pd.DataFrame:
    from sklearn.mixture import GaussianMixture

    numeric = [c for c in train_frame.columns if c != label]
    mu, sd = train_frame[numeric].mean(), train_frame[numeric].std()
    onehot = pd.get_dummies(train_frame[label], prefix="L", dtype=float)
    x = np.concatenate([((train_frame[numeric] - mu) / sd).to_numpy(), onehot.to_numpy()], 1)
    fits = [GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=seed).fit(x) for k in range(1, 11)]
    best = min(fits, key=lambda g: g.bic(x))
    draws, _ = best.sample(len(train_frame))
    out = pd.DataFrame(draws[:, : len(numeric)] * sd.to_numpy() + mu.to_numpy(), columns=numeric)
    levels = [c[2:] for c in onehot.columns]
    out[label] = [type(train_frame[label].iloc[0])(levels[i]) for i in draws[:, len(numeric) :].argmax(1)]
    for c in numeric:  # whole-number columns stay whole numbers
        if (train_frame[c] == train_frame[c].round()).all():
            out[c] = out[c].round().clip(lower=train_frame[c].min())
    return out[list(train_frame.columns)]


def tvae_synth(train_frame: pd.DataFrame, label: str, args: argparse.Namespace, tmp: Path) -> pd.DataFrame:
    real, synth, script = tmp / "tvae_real.csv", tmp / "tvae_synth.csv", tmp / "tvae.py"
    train_frame.to_csv(real, index=False)
    script.write_text(TVAE)
    subprocess.run([args.sdv_python, str(script), str(real), str(synth), str(args.tvae_epochs), label], check=True,
                   capture_output=True)  # fmt: skip
    out = pd.read_csv(synth)
    out[label] = out[label].astype(type(train_frame[label].iloc[0]))
    return out[list(train_frame.columns)]


def codes(frame: pd.DataFrame, label: str, levels: list) -> pd.DataFrame:
    out = frame.copy()
    out[label] = pd.Categorical(out[label], categories=levels).codes.astype(float)
    return out.astype(float)


def scores(real: pd.DataFrame, synth: pd.DataFrame, test: pd.DataFrame, label: str) -> dict:
    from scipy.stats import ks_2samp
    from sklearn.ensemble import RandomForestClassifier

    levels = sorted(real[label].unique())
    r, s, t = codes(real, label, levels), codes(synth, label, levels), codes(test, label, levels)
    ks = [ks_2samp(r[c], s[c]).statistic for c in r.columns]
    upper = np.triu_indices(r.shape[1], 1)
    corr = np.abs(np.nan_to_num(r.corr().to_numpy()) - np.nan_to_num(s.corr().to_numpy()))[upper].mean()
    features = [c for c in r.columns if c != label]

    def accuracy(fit: pd.DataFrame) -> float:
        forest = RandomForestClassifier(200, random_state=0, n_jobs=1).fit(fit[features], fit[label])
        return float((forest.predict(t[features]) == t[label]).mean())

    return {"ks_mean": float(np.mean(ks)), "ks_max": float(np.max(ks)), "corr_mad": float(corr),
            "tstr": accuracy(s), "trtr": accuracy(r)} | closeness(r, s, t)  # fmt: skip


def closeness(r: pd.DataFrame, s: pd.DataFrame, t: pd.DataFrame) -> dict:
    """Distances to the closest real-train row (standardised columns): synthetic rows against real-test's."""
    from sklearn.neighbors import NearestNeighbors

    mu, sd = r.mean(), r.std().replace(0, 1)
    nearest = NearestNeighbors(n_neighbors=1).fit(((r - mu) / sd).to_numpy())
    synth, test = (nearest.kneighbors(((f - mu) / sd).to_numpy())[0][:, 0] for f in (s, t))
    return {"dcr_median": float(np.median(synth)), "dcr_test_median": float(np.median(test)),
            "dcr_close": float((synth < np.quantile(test, 0.05)).mean())}  # fmt: skip


def main() -> None:
    args = parse()
    set_threads(args.threads)
    from sklearn.model_selection import train_test_split

    rows, kinds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            frame, label, declared = load(name)
            for seed in range(args.seeds):
                real, test = train_test_split(frame, test_size=0.3, stratify=frame[label], random_state=seed)
                methods = [m for m in args.methods if m != "tvae" or args.sdv_python]
                for method in methods:
                    start = time.perf_counter()
                    if method == "elbox":  # one run, sampled from the prior (elbox) and the aggregate posterior
                        draws, kinds[name] = elbox_synth(real, declared, seed, args, Path(tmp))
                        synths = {"elbox" if k == "prior" else f"elbox-{k}": v for k, v in draws.items()}
                    elif method == "bootstrap":  # the metrics' floor: n rows of the empirical distribution
                        synths = {method: real.sample(len(real), replace=True, random_state=seed)}
                    elif method == "gmm":
                        synths = {method: gmm_synth(real, label, seed)}
                    else:
                        synths = {method: tvae_synth(real, label, args, Path(tmp))}
                    seconds = time.perf_counter() - start
                    for key, synth in synths.items():
                        row = {"table": name, "seed": seed, "method": key, "seconds": seconds}
                        rows.append(row | scores(real, synth, test, label))
                        print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in args.tables:
        for method in sorted({r["method"] for r in rows}):
            r = [row for row in rows if row["table"] == name and row["method"] == method]
            summary[f"{name}/{method}"] = {k: float(np.mean([row[k] for row in r])) for k in SUMMARY}
            print(name, method, {k: round(v, 4) for k, v in summary[f"{name}/{method}"].items()})
    write_results(args, {"runs": rows, "summary": summary, "elbox_column_kinds": kinds})


if __name__ == "__main__":
    main()
