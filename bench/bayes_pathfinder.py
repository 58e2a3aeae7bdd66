"""Pathfinder's path of Gaussians (Zhang, Carpenter, Gelman & Vehtari 2022) put through elbox's verdict.

    ELBOX_POSTERIORDB=../shared/data/posteriordb python bench/bayes_pathfinder.py

The issue asked whether Pathfinder's Gaussians should be auto's step after the Laplace approximation. Pathfinder
runs L-BFGS towards the mode and, at each iterate x_i, forms the Gaussian N(x_i - H_i g_i, H_i) from the L-BFGS
inverse-Hessian estimate H_i (g_i the gradient of -log p there), estimates each one's ELBO from a few draws, and
keeps the best. Here H_i is the dense BFGS recursion over every (s, y) pair of the path so far (Pathfinder keeps
the last six; every pair can only make H_i closer to the curvature), each ELBO is estimated from ``--draws``
draws, and the best Gaussian goes through ``diagnostics`` (4 x 5,000 fresh draws) and is compared with the
reference draws. Beside it: the Laplace approximation's and the full-rank fit's ELBO and verdict (the two
Gaussians auto already has), so each row says whether the path's Gaussian would be trusted where they are not,
and what it costs in log-density evaluations.
"""

import argparse
import itertools
import time

import numpy as np
import torch

from elbox import bayes
from elbox.bayes.fitting import _laplace
from elbox.bayes.laplace import Start
from elbox.lbfgs import minimize

NAMES = "eight_schools_noncentered,eight_schools_centered,kilpisjarvi,blr,diamonds,low_dim_gauss_mix,hmm_example"


def path(model, data, dtype=torch.float64):
    """The L-BFGS path to the mode: points x_i ``[d]`` and gradients of -log p, each lower than the last."""
    seen = []

    def value_and_grad(x):
        x = x.detach().requires_grad_()
        loss = -model.log_density(x[None], data)[0]
        g = torch.autograd.grad(loss, x)[0]
        seen.append((x.detach().clone(), loss.item(), g.detach().clone()))
        return loss.item(), g

    minimize(value_and_grad, torch.zeros(model.dim, dtype=dtype), max_iter=1000, history=50, tolerance_grad=1e-10,
             tolerance_change=1e-14)  # fmt: skip
    kept, best = [], np.inf
    for x, f, g in seen:  # the running minimum: the accepted points (and any trial point that lowered f)
        if np.isfinite(f) and f < best:
            kept.append((x, g))
            best = f
    return kept, len(seen)


def gaussians(kept):
    """N(x_i - H_i g_i, H_i) at each point, H_i by the dense BFGS recursion over the path's pairs so far."""
    d = kept[0][0].shape[0]
    h = None
    out = []
    for (x0, g0), (x1, g1) in itertools.pairwise(kept):
        s, y = x1 - x0, g1 - g0
        ys = float(y @ s)
        if ys <= 1e-10:
            continue
        if h is None:
            h = torch.eye(d, dtype=x1.dtype) * ys / float(y @ y)
        rho = 1.0 / ys
        v = torch.eye(d, dtype=x1.dtype) - rho * torch.outer(s, y)
        h = v @ h @ v.T + rho * torch.outer(s, s)
        h = (h + h.T) / 2
        out.append((x1 - h @ g1, h.clone()))
    return out


def elbo(model, data, mean, cov, draws, seed):
    q = torch.distributions.MultivariateNormal(mean, cov)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u = q.sample((draws,))
    with torch.no_grad():
        return float((model.log_density(u, data) - q.log_prob(u)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default=NAMES)
    parser.add_argument("--draws", type=int, default=100)
    args = parser.parse_args()
    print("posterior | path points | best i | ELBO: path / Laplace / full-rank | path's Gaussian: verdict, k-hat, "
          "max mean err, sd ratios, targets | evals: path / full-rank fit | seconds: path / full-rank fit")
    for name in args.names.split(","):
        ref = bayes.load(name)
        model, data = ref.model, ref.model.prepare(ref.data, torch.float64)[0]
        t0 = time.perf_counter()
        kept, path_evals = path(model, data)
        cands = gaussians(kept)
        scored = []
        for i, (m, c) in enumerate(cands):
            try:
                scored.append((elbo(model, data, m, c, args.draws, i), i))
            except ValueError:  # not positive definite in float64: skip the point
                continue
        best, i = max(scored)
        mean, cov = cands[i]
        path_seconds = time.perf_counter() - t0
        evals = path_evals + args.draws * len(scored)
        start = Start(mean, torch.cholesky_inverse(torch.linalg.cholesky(cov)), "mode")
        pf = _laplace(model, data, start, [], 0, 1)
        d = pf.diagnostics()
        c = bayes.compare(pf.columns(20_000, seed=12345), ref.draws)
        auto = bayes.fit(ref.model, ref.data, family="auto", seed=0)
        full = next((a for a in auto.attempts if a["family"] == "fullrank"), None)
        fr_phase = next((p for p in auto.phases if p["phase"].startswith("fit fullrank")), None)
        lap = bayes.fit(ref.model, ref.data, family="laplace") if auto.start.method == "mode" else None
        lap_elbo = f"{lap.diagnostics().elbo[0]:.2f}" if lap else "no mode"
        fr = bayes.fit(ref.model, ref.data, family="fullrank", seed=0)
        print(f"{name} | {len(kept)} | {i} | {best:.2f} / {lap_elbo} / {fr.diagnostics().elbo[0]:.2f} | "
              f"{d.verdict}, {d.khat_max:.2f}, {np.abs(c.mean_error).max():.3f}, {c.sd_ratio.min():.3f}-"
              f"{c.sd_ratio.max():.3f}, {'yes' if c.passes() else 'no'} | {evals:,} / "
              f"{fr_phase['evaluations'] if fr_phase else '-'} | {path_seconds:.2f} / "
              f"{fr_phase['seconds'] if fr_phase else float('nan'):.2f} | full-rank in auto: "
              f"{full['verdict'] if full else '-'}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
