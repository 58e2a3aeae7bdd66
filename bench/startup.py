"""Start-up time of elbox's imports and commands against ``import torch``.

Medians over ``--runs`` (at least 7) interleaved runs, each a fresh interpreter, of:
``python -c 'import torch'``, ``-c 'import elbox'``, ``-c 'import elbox.bayes'``,
``-m elbox --help``, ``-m elbox fit --help``, and what ``elbox fit`` imports before its first
step (the command line, the model, the data, the fit and the summary); then the top offenders of
``python -X importtime`` for that fit path (cumulative microseconds, top-level packages).

    python bench/startup.py [--runs 9] [--python .venv/bin/python] [--out bench/results/startup.json]

The issue's target: ``elbox fit``'s start-up at most 0.3 s above ``import torch``.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# what ``elbox fit NAME`` imports before its first step: the command line (``elbox.cli``, as ``python -m elbox``
# imports it), the model and its data, the fit and the summary
FIT_PATH = ("import elbox.cli; from elbox import bayes; from elbox.bayes.report import describe; "
            "r = bayes.load('eight_schools_noncentered'); bayes.fit, bayes.compare")  # fmt: skip
COMMANDS = {
    "import torch": ["-c", "import torch"],
    "import elbox": ["-c", "import elbox"],
    "import elbox.bayes": ["-c", "import elbox.bayes"],
    "elbox --help": ["-m", "elbox", "--help"],
    "elbox fit --help": ["-m", "elbox", "fit", "--help"],
    "fit path imports": ["-c", FIT_PATH],
}


def seconds(python: str, args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([python, *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def offenders(python: str, top: int) -> list[tuple[str, int]]:
    err = subprocess.run([python, "-X", "importtime", "-c", FIT_PATH], capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            if "." not in name or name.startswith(("elbox", "scipy", "matplotlib", "arviz")):
                rows.append((name, int(cumulative)))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for r in range(max(args.runs, 7)):
        names = list(COMMANDS)
        for name in names[r % len(names):] + names[: r % len(names)]:  # interleaved, the order rotating
            times[name].append(seconds(args.python, COMMANDS[name]))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, m in medians.items():
        print(f"{name:<20} {m:6.3f} s   ({m - medians['import torch']:+.3f} s vs import torch)")
    print("\nimporttime, the fit path (cumulative us; top-level packages and elbox's modules):")
    top = offenders(args.python, args.top)
    for name, us in top:
        print(f"  {us:>9} {name}")
    if args.out is not None:
        args.out.write_text(json.dumps({"medians": medians, "runs": times, "importtime": top}, indent=1))


if __name__ == "__main__":
    main()
