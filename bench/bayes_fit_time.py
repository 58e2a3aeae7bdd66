"""The fit itself: `bayes.fit(NAME, family="auto")` and its verdict, imports excluded, repeated in one process.

    python bench/bayes_fit_time.py --name eight_schools_noncentered --repeats 5

Imports (elbox's modules, zuko) happen before the clock starts; every repeat is the same fit (seed 0). Prints
each repeat's seconds, the median, and the phases of the last one (``Posterior.phases``). The issue's target for
the non-centered eight schools: under 1 s.
"""

import argparse
import statistics
import time

from elbox import bayes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="eight_schools_noncentered")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import elbox.bayes.diagnostics  # imports excluded from the clock (the first also binds elbox)
    import elbox.bayes.fitting  # noqa: F401
    from elbox.families.flow import _zuko

    _zuko()
    reference = bayes.load(args.name)
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        posterior = bayes.fit(reference.model, reference.data, family="auto")
        verdict = posterior.diagnostics().verdict
        seconds.append(time.perf_counter() - t0)
        print(f"{seconds[-1]:.2f} s  {posterior.family_name}: {verdict}", flush=True)
    for phase in posterior.phases:
        print(f"  {phase['phase']:<28} {phase['seconds']:6.3f} s  {phase['evaluations']:>9,} log p evals")
    print(f"median {statistics.median(seconds):.2f} s over {args.repeats}")


if __name__ == "__main__":
    main()
