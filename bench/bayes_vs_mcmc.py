"""Whole-command wall time: `elbox fit NAME` against NumPyro's NUTS and SVI, on posteriordb's posteriors.

Each timing is a whole process as a user runs it, interpreter start, imports and compilation
included:

- elbox: ``python -m elbox fit NAME`` (whatever the installed ``elbox fit`` does; the posteriordb
  folder reaches it through ``ELBOX_POSTERIORDB``);
- NUTS: bench/bayes_vs_mcmc_numpyro.py NAME nuts (4 chains x (1,000 warm-up + 1,000 draws), chains
  one after the other; its draws' means are checked against the reference draws: within 0.1 sd);
- SVI: the same script with svi-normal / svi-mvn (AutoNormal / AutoMultivariateNormal, 10,000 steps).

Rounds are interleaved, and each round rotates the order of the tools, so that a slow spell of a
shared machine does not fall on one tool. Prints per posterior the median seconds of each tool,
the ratio NUTS / elbox, and the median of that ratio over the posteriors; writes everything
(every run's seconds, exit status and last output line) to bench/results/bayes_vs_mcmc-<time>.json.

    python bench/bayes_vs_mcmc.py --rounds 3 --elbox-python .venv/bin/python --peer-python ~/benchenv/bin/python

The peer interpreter is a bench-only virtual environment (never a dependency of elbox):
    python3 -m venv ~/benchenv && ~/benchenv/bin/pip install -q -c constraints.txt torch==2.13.0 pyro-ppl numpyro jax
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
POSTERIORS = ("eight_schools_noncentered", "eight_schools_centered", "kilpisjarvi", "blr", "diamonds",
              "low_dim_gauss_mix", "hmm_example")  # fmt: skip
TOOLS = ("elbox", "nuts", "svi-normal", "svi-mvn")


def command(tool: str, name: str, args: argparse.Namespace) -> list[str]:
    if tool == "elbox":
        return [args.elbox_python, "-m", "elbox", "fit", name]
    peer = str(HERE / "bayes_vs_mcmc_numpyro.py")
    return [args.peer_python, peer, name, tool, "--posteriordb", str(args.posteriordb)]


def run_one(tool: str, name: str, args: argparse.Namespace) -> dict:
    env = os.environ | {"ELBOX_POSTERIORDB": str(args.posteriordb)}
    t0 = time.perf_counter()
    done = subprocess.run(command(tool, name, args), capture_output=True, text=True, env=env, timeout=args.timeout)
    seconds = time.perf_counter() - t0
    lines = (done.stdout.strip() or done.stderr.strip() or "-").splitlines()
    record = {"seconds": seconds, "rc": done.returncode, "last": lines[-1][:400]}
    if tool != "elbox" and done.returncode == 0:
        record["check"] = json.loads(lines[-1])
    elif tool == "elbox":
        record["verdict"] = next((ln.strip() for ln in lines if ln.strip().lower().startswith("verdict")), None)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--posteriors", nargs="+", default=list(POSTERIORS), choices=POSTERIORS)
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--elbox-python", default=sys.executable)
    parser.add_argument("--peer-python", default=str(Path.home() / "benchenv" / "bin" / "python"))
    parser.add_argument("--posteriordb", type=Path, default=Path(os.environ.get(
        "ELBOX_POSTERIORDB", HERE.parents[1] / "shared" / "data" / "posteriordb")).resolve())  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before one run is abandoned")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parser.add_argument("--out", type=Path, default=HERE / "results" / f"bayes_vs_mcmc-{stamp}.json")
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict]]] = {n: {t: [] for t in args.tools} for n in args.posteriors}
    for r in range(args.rounds):
        for i, name in enumerate(args.posteriors):
            k = (r + i) % len(args.tools)
            for tool in args.tools[k:] + args.tools[:k]:  # the order rotates over rounds and posteriors
                record = run_one(tool, name, args)
                runs[name][tool].append(record)
                print(f"round {r + 1} {name:<26} {tool:<10} {record['seconds']:7.1f} s  rc={record['rc']}  "
                      f"{record.get('check', record.get('verdict', ''))}", flush=True)  # fmt: skip
                save(args, runs, None)  # after every run: an interrupted benchmark keeps what it measured
    save(args, runs, summarise(runs, args.tools))
    print(f"wrote {args.out}")


def save(args: argparse.Namespace, runs: dict, table: dict | None) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"argv": sys.argv, "rounds": args.rounds, "summary": table, "runs": runs}, indent=1))


def summarise(runs: dict, tools: list[str]) -> dict:
    table, ratios = {}, []
    print(f"\n{'posterior':<26}" + "".join(f"{t + ' s':>14}" for t in tools) + f"{'NUTS/elbox':>12}")
    for name, by_tool in runs.items():
        row = {t: statistics.median(r["seconds"] for r in by_tool[t]) for t in tools}
        if "nuts" in row and "elbox" in row:
            row["nuts/elbox"] = row["nuts"] / row["elbox"]
            ratios.append(row["nuts/elbox"])
        table[name] = row
        ratio = row.get("nuts/elbox", float("nan"))
        print(f"{name:<26}" + "".join(f"{row[t]:14.1f}" for t in tools) + f"{ratio:12.2f}")
    if ratios:
        table["median nuts/elbox"] = statistics.median(ratios)
        print(f"median NUTS/elbox over {len(ratios)} posteriors: {table['median nuts/elbox']:.2f}")
    return table


if __name__ == "__main__":
    main()
