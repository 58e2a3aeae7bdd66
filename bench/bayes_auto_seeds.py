"""`family="auto"` over seeds: what it chose, its verdict, and whether the targets hold, per posterior and seed.

    ELBOX_POSTERIORDB=../shared/data/posteriordb python bench/bayes_auto_seeds.py \
        --names eight_schools_noncentered,eight_schools_centered --seeds 0-39

One line per fit: wall seconds of ``bayes.fit`` and its verdict, the family chosen, the verdict, the largest
k-hat, and against the 10,000 reference draws (20,000 draws from q): the worst mean error in reference sds, the
range of sd ratios, and whether every mean is within 0.1 sd and every sd within 10%. Then each flow schedule
auto ran (the first, and the continuation when the first was refused): its verdict and its largest k-hats from
q and from the defensive mixture ("-" where that check was not made). Per posterior, a summary: fits trusted,
trusted and missing the targets (the verdict's failures), refused and meeting them, and how often the
continuation rescued a first schedule that left both importance estimates unreliable (k-hats at or above 0.7).
Last, for each trusted fit, how a second, independently seeded fit would check it: the share of the other seeds'
final q that disagree with it by ``diagnostics.AGREE_MEAN`` sds in some mean or ``AGREE_SD`` in some sd (q's own
moments, from the verdict's draws), and the median of that largest disagreement.
"""

import argparse
import time

import numpy as np

from elbox import bayes
from elbox.bayes.diagnostics import AGREE_MEAN, AGREE_SD


def seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = map(int, text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="eight_schools_noncentered,eight_schools_centered")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="a list (0,1,2) or a range (0-39)")
    args = parser.parse_args()
    for name in args.names.split(","):
        reference = bayes.load(name)
        rows = []
        for seed in seeds(args.seeds):
            t0 = time.perf_counter()
            posterior = bayes.fit(reference.model, reference.data, family="auto", seed=seed)
            d = posterior.diagnostics()
            seconds = time.perf_counter() - t0
            c = bayes.compare(posterior.columns(20_000, seed=12345), reference.draws)
            flows = [a for a in posterior.attempts if a["family"].startswith(("realnvp", "nsf", "iaf", "maf"))]
            schedules = " ".join(f"[{a['verdict']} k={max(a['khat']):.2f} g="
                                 f"{max(a['defensive_khat']) if a['defensive_khat'] else float('nan'):.2f}]"
                                 for a in flows)  # fmt: skip
            print(f"{name} seed={seed} {seconds:.2f}s chose={posterior.family_name} {d.verdict} "
                  f"khat={max(d.khat):.2f} err={abs(c.mean_error).max():.3f} "
                  f"sd={c.sd_ratio.min():.3f}-{c.sd_ratio.max():.3f} passes={c.passes()} {schedules}", flush=True)
            rows.append((d.trusted, bool(c.passes()), flows, seed, d.q_mean, d.q_sd))
        trusted = [r for r in rows if r[0]]
        first = [r for r in rows if len(r[2]) == 2 and min(max(r[2][0]["khat"]),
                                                           max(r[2][0]["defensive_khat"] or [0.0])) >= 0.7]
        for _, passes, _, seed, mean, sd in trusted:  # a second fit's agreement, from the other seeds' fits
            apart = np.array([max(np.max(np.abs(mean - m) / s), np.max(np.abs(sd / s - 1)) * AGREE_MEAN / AGREE_SD)
                              for *_, other, m, s in rows if other != seed])  # fmt: skip
            print(f"AGREEMENT {name} seed={seed} passes={passes}: disagrees with {np.mean(apart >= AGREE_MEAN):.0%} "
                  f"of the other fits, median largest disagreement {np.median(apart):.3f} sd")  # fmt: skip
        print(f"SUMMARY {name}: {len(rows)} fits, trusted {len(trusted)}, trusted and missing the targets "
              f"{sum(not r[1] for r in trusted)}, refused and meeting them {sum(r[1] for r in rows if not r[0])}; "
              f"first flow schedule with both estimates unreliable {len(first)}, rescued by the continuation "
              f"{sum(r[0] for r in first)} (meeting the targets {sum(r[0] and r[1] for r in first)})")  # fmt: skip


if __name__ == "__main__":
    main()
