"""What stopping a verdict early saves inside `family="auto"`, and that it changes no answer.

    ELBOX_POSTERIORDB=../shared/data/posteriordb python bench/bayes_verdict_early.py --seeds 0,1

For each posterior and seed, `bayes.fit(..., family="auto")` twice, alternated: as it is (the verdicts on fits
auto may pass over stop at the first set that makes "trust" impossible, ``fitting._early``) and with every
verdict run to its four sets. Per pair: whether the verdict shown is the same (a hash of
``Diagnostics.to_dict()``, and the family chosen), the log-density evaluations of the whole fit, the seconds
spent in verdicts, and which verdicts stopped after how many sets.
"""

import argparse
import hashlib
import json

from elbox import bayes
from elbox.bayes import fitting

NAMES = "eight_schools_noncentered,eight_schools_centered,kilpisjarvi,blr,diamonds,low_dim_gauss_mix,hmm_example"


def run(reference: bayes.Reference, seed: int, early: bool) -> tuple[str, int, float, list[str]]:
    policy = fitting._early
    if not early:
        fitting._early = lambda *args: None  # every verdict runs its four sets
    try:
        posterior = bayes.fit(reference.model, reference.data, family="auto", seed=seed)
        d = posterior.diagnostics()
    finally:
        fitting._early = policy
    digest = hashlib.md5(json.dumps(d.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    verdicts = [p for p in posterior.phases if p["phase"].startswith("verdict")]
    stopped = [f"{p['phase'][11:]} ({p['note'].split(' x ')[0]})" for p in verdicts if "stopped" in p["note"]]
    return (f"{posterior.family_name} {d.verdict} {digest}", sum(p["evaluations"] for p in posterior.phases),
            sum(p["seconds"] for p in verdicts), stopped)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default=NAMES)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    print("posterior | seed | same answer | evaluations: full -> early | verdict seconds: full -> early | stopped")
    for name in args.names.split(","):
        reference = bayes.load(name)
        for seed in map(int, args.seeds.split(",")):
            full, early = run(reference, seed, False), run(reference, seed, True)
            print(f"{name} | {seed} | {'yes' if full[0] == early[0] else 'NO: ' + full[0] + ' / ' + early[0]} | "
                  f"{full[1]:,} -> {early[1]:,} | {full[2]:.3f} -> {early[2]:.3f} | {', '.join(early[3]) or '-'}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
