"""`family="auto"` over seeds: what it chose, its verdict, and whether the targets hold, per posterior and seed.

    ELBOX_POSTERIORDB=../shared/data/posteriordb python bench/bayes_auto_seeds.py \
        --names eight_schools_noncentered,eight_schools_centered --seeds 0,1,2,3,4

One line per fit: wall seconds of ``bayes.fit`` and its verdict, the family chosen, the verdict, the largest
k-hat, and against the 10,000 reference draws (20,000 draws from q): the worst mean error in reference sds, the
range of sd ratios, and whether every mean is within 0.1 sd and every sd within 10%.
"""

import argparse
import time

from elbox import bayes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default="eight_schools_noncentered,eight_schools_centered")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    for name in args.names.split(","):
        reference = bayes.load(name)
        for seed in map(int, args.seeds.split(",")):
            t0 = time.perf_counter()
            posterior = bayes.fit(reference.model, reference.data, family="auto", seed=seed)
            d = posterior.diagnostics()
            seconds = time.perf_counter() - t0
            c = bayes.compare(posterior.columns(20_000, seed=12345), reference.draws)
            print(f"{name} seed={seed} {seconds:.2f}s chose={posterior.family_name} {d.verdict} "
                  f"khat={max(d.khat):.2f} err={abs(c.mean_error).max():.3f} "
                  f"sd={c.sd_ratio.min():.3f}-{c.sd_ratio.max():.3f} passes={c.passes()}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
