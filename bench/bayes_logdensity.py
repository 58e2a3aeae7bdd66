"""Microseconds per log-density plus gradient of each posteriordb model, at K = 16 particles.

One evaluation is what a fitting step pays for the model: ``Model.log_density(u, data)`` at
u ``[16, d]`` (unconstrained, float64 as the fit uses), summed, and its gradient by ``backward``.
Median over repeats of blocks of ``--calls`` evaluations, after a warm-up.

    python bench/bayes_logdensity.py [--posteriordb DIR] [--repeats 15] [--calls 200] [--dtype float64]
        [--compile] [--torch-distributions] [--out bench/results/bayes_logdensity.json]

``--torch-distributions`` adds eight schools written with ``torch.distributions`` objects (``Normal``,
``HalfCauchy``) instead of ``elbox.bayes.densities``: what a model costs written the usual way.

Ends with one line per model: ``NAME  d=...  us=...`` (the issue's target: eight schools
non-centered at most 250 us).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from elbox import bayes
from elbox.bayes.references import POSTERIORDB

K = 16


def eight_schools_torch_distributions(reference: bayes.Reference) -> bayes.Reference:
    """The non-centered eight schools with ``torch.distributions``' log_prob: the same density up to rounding."""
    from torch.distributions import HalfCauchy, Normal, constraints

    params = {"theta_trans": bayes.Param(8), "mu": bayes.Param(), "tau": bayes.Param(support=constraints.positive)}

    def prior(p: dict) -> torch.Tensor:
        return (Normal(0.0, 1.0).log_prob(p["theta_trans"]).sum(-1) + Normal(0.0, 5.0).log_prob(p["mu"])
                + HalfCauchy(5.0).log_prob(p["tau"]))  # fmt: skip

    def likelihood(p: dict, d: dict) -> torch.Tensor:
        return Normal(p["mu"][:, None] + p["tau"][:, None] * p["theta_trans"], d["sigma"]).log_prob(d["y"])

    model = bayes.Model(params, prior, likelihood, observed=("y", "sigma"), name="eight_schools_torch_distributions")
    return bayes.Reference(model.name, model, reference.data)


def time_model(reference: bayes.Reference, args: argparse.Namespace) -> dict:
    dtype = getattr(torch, args.dtype)
    model = reference.model
    data, _ = model.prepare(reference.data, dtype)
    u = (0.1 * torch.randn(K, model.dim, generator=torch.Generator().manual_seed(0), dtype=dtype)).requires_grad_()

    log_density = model.log_density
    compile_seconds = None
    if args.compile:  # torch.compile of the whole log density; the first call pays the compilation
        log_density = torch.compile(model.log_density, dynamic=False)
        t0 = time.perf_counter()
        log_density(u, data).sum().backward()
        compile_seconds = time.perf_counter() - t0

    def call() -> None:
        log_density(u, data).sum().backward()
        u.grad = None

    for _ in range(args.calls // 4 + 1):  # warm-up: allocator, lazy inits
        call()
    blocks = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.calls):
            call()
        blocks.append((time.perf_counter() - t0) / args.calls * 1e6)
    return {"dim": model.dim, "us": statistics.median(blocks), "us_min": min(blocks), "compile_s": compile_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriordb", default=None, help="posteriordb folder")
    parser.add_argument("--posteriors", nargs="*", default=list(POSTERIORDB))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: what K = 16 wants)")
    parser.add_argument("--compile", action="store_true", help="time torch.compile(model.log_density) instead")
    parser.add_argument("--torch-distributions", action="store_true", help="add eight schools with torch.distributions")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    references = [bayes.load(name, args.posteriordb) for name in args.posteriors]
    if args.torch_distributions:
        references.append(eight_schools_torch_distributions(bayes.load("eight_schools_noncentered")))
    for reference in references:
        name = reference.name
        results[name] = time_model(reference, args)
        r = results[name]
        compiled = f"  compile {r['compile_s']:.1f} s" if args.compile else ""
        print(f"{name:<28} d={r['dim']:<3} us={r['us']:8.1f}  (min {r['us_min']:.1f}){compiled}", flush=True)
    if args.out is not None:
        meta = {"torch": torch.__version__, "threads": args.threads, "dtype": args.dtype, "K": K}
        meta["compile"] = args.compile
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
