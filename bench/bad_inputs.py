"""Replay a careless user's inputs through the real CLI and count what went wrong.

Each case runs `python -m elbox ...` in a fresh temporary folder and is judged by what a user
sees: a traceback (any exit status with "Traceback" on stderr), a silent acceptance (exit 0
where a refusal or a warning belongs), a wrong exit status, or a message that misses what it
must say. Prints one line per case, then the counts; exits 1 when any case fails.

    python bench/bad_inputs.py                 # every case
    python bench/bad_inputs.py -k out -v       # the cases whose name contains "out", with output
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TINY = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--no-report"]


@dataclass
class Case:
    name: str
    args: list[str]
    expect: str = "refuse"  # refuse (exit 2), warn (exit 0 + "warning"), ok (exit 0), either (0 or 2)
    must_say: list[str] = field(default_factory=list)  # words the message must contain (case-insensitive)
    must_not_say: list[str] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None  # extra check: a problem or None


def _npy(name: str, array: np.ndarray) -> Callable[[Path], None]:
    return lambda d: np.save(d / name, array)


def _trained(out: str = "run", epochs: int = 2) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        _elbox(d, ["train", "--out", out, "--epochs", str(epochs), *TINY[2:]])

    return setup


def _grey_at_row_36(d: Path) -> None:
    x = np.zeros((100, 6), dtype=np.float32)
    x[36, 2] = 0.5
    np.save(d / "grey.npy", x)


def _corrupt_checkpoint(d: Path) -> None:
    _trained()(d)
    (d / "run" / "checkpoints" / "last.safetensors").write_bytes(b"not a checkpoint")


def _only_best(d: Path) -> None:
    _trained()(d)
    (d / "run" / "checkpoints" / "last.safetensors").unlink()


def _run_json_says(status: str) -> Callable[[Path, subprocess.CompletedProcess], str | None]:
    def check(d: Path, _: subprocess.CompletedProcess) -> str | None:
        info = d / "out" / "run.json"
        if not info.exists():
            return None
        got = json.loads(info.read_text()).get("status")
        return None if got == status else f"run.json says status {got!r}, not {status!r}"

    return check


def _no_false_checkpoint(d: Path, r: subprocess.CompletedProcess) -> str | None:
    if "checkpoint is in" in r.stderr and not (d / "out" / "checkpoints").exists():
        return "points to a checkpoint folder that does not exist"
    return None


CASES = [
    Case("out in /proc", ["train", *TINY, "--out", "/proc/x"], must_say=["/proc/x"]),
    Case("out in /sys", ["train", *TINY, "--out", "/sys/x"], must_say=["/sys/x"]),
    Case("out is a file", ["train", *TINY, "--out", "afile"], must_say=["afile"],
         setup=lambda d: (d / "afile").write_text("keep me"),
         check=lambda d, _: None if (d / "afile").read_text() == "keep me" else "the file was changed"),
    Case("realnvp in one dimension", ["train", *TINY, "--family", "realnvp", "--latent-dim", "1"],
         must_say=["2 dimensions"]),
    Case("diverged run", ["train", *TINY, "--data", "huge.npy", "--out", "out"], must_not_say=["checkpoints"],
         setup=_npy("huge.npy", np.full((200, 4), 1e30, dtype=np.float32) * np.random.default_rng(0).random((200, 4))),
         check=lambda d, r: _run_json_says("diverged")(d, r) or _no_false_checkpoint(d, r)),
    Case("bernoulli names the file's row", ["train", *TINY, "--data", "grey.npy", "--likelihood", "bernoulli"],
         must_say=["row 36"], setup=_grey_at_row_36),
    Case("negative values are not grey", ["train", *TINY, "--data", "neg.npy", "--likelihood", "bernoulli"],
         must_say=["negative"], must_not_say=["grey"], setup=_npy("neg.npy", -np.ones((50, 4), np.float32))),
    Case("float64 beyond float32", ["train", *TINY, "--data", "big.npy"], must_say=["float32"],
         must_not_say=["RuntimeWarning", "impute"], setup=_npy("big.npy", np.full((50, 4), 1e300))),
    Case("static binarize of standardised data", ["train", *TINY, "--data", "std.npy", "--binarize", "static"],
         must_say=["std.npy"], must_not_say=["the tensor", "255"],
         setup=_npy("std.npy", np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32))),
    Case("negative beta", ["train", *TINY, "--beta", "-1"], must_say=["beta", "-1"],
         must_not_say=["kl_warmup", "free_bits"]),
    Case("iaf with zero steps", ["train", *TINY, "--family", "iaf:0"], must_not_say=["unknown family"]),
    Case("hidden with a word", ["train", "--epochs", "1", "--hidden", "200,abc"], must_say=["abc", "positive integers"],
         must_not_say=["type tuple"]),
    Case("hidden in TOML as a number", ["train", "--config", "c.toml"], must_say=["hidden"],
         must_not_say=["type tuple"], setup=lambda d: (d / "c.toml").write_text("hidden = 200\nepochs = 1\n")),
    Case("max memory zero", ["evaluate", "run", "--max-memory", "0", "--k", "8", "--gap-points", "0"],
         must_say=["max-memory"], must_not_say=["gap_lr"], setup=_trained()),
    Case("a directory named .npy", ["train", *TINY, "--data", "x.npy"], must_not_say=["does not exist"],
         setup=lambda d: (d / "x.npy").mkdir()),
    Case("corrupt checkpoint", ["evaluate", "run", "--k", "8", "--gap-points", "0"], must_say=["checkpoint"],
         must_not_say=["resume from another checkpoint"],
         setup=_corrupt_checkpoint),
    Case("missing last, best present", ["evaluate", "run", "--k", "8", "--gap-points", "0"],
         must_say=["--checkpoint best"], setup=_only_best),
    Case("unknown config key", ["train", "--config", "c.toml"], must_say=["did you mean", "latent_dim"],
         setup=lambda d: (d / "c.toml").write_text("latent_dimm = 3\n")),
    Case("unknown model name", ["train", *TINY, "--model", "vea"], must_say=["did you mean", "vae"]),
    Case("empty hidden", ["train", "--epochs", "1", "--hidden", "", "--no-report"], must_say=["hidden"]),
    Case("resume a finished run", ["train", "--resume", "run"], expect="warn", must_say=["complete"],
         must_not_say=["Trained a"], setup=_trained()),
    Case("resume with fewer epochs", ["train", "--resume", "run", "--epochs", "1"], must_say=["epochs"],
         setup=_trained(epochs=2)),
    Case("evaluate with one particle", ["evaluate", "run", "--k", "1", "--gap-points", "0"], expect="either",
         must_not_say=["nan", "0.0% of points"], setup=_trained()),
    Case("warm-up longer than the run", ["train", *TINY, "--kl-warmup", "500"], expect="warn",
         must_say=["warm-up"]),
]


def _elbox(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-m", "elbox", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip


def judge(case: Case, r: subprocess.CompletedProcess, d: Path) -> tuple[str, str]:
    """(verdict, detail): ok, traceback, silent, status or message."""
    said = (r.stdout + r.stderr).lower()
    if "traceback" in said:
        return "traceback", r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    wanted = {"refuse": 2, "warn": 0, "ok": 0, "either": r.returncode if r.returncode in (0, 2) else 2}[case.expect]
    if case.expect == "refuse" and r.returncode == 0:
        return "silent", "accepted without a word"
    if case.expect == "warn" and "warning" not in said:
        return "silent", "no warning"
    if r.returncode != wanted:
        return "status", f"exit {r.returncode}, wanted {wanted}"
    missing = [w for w in case.must_say if w.lower() not in said]
    wrong = [w for w in case.must_not_say if w.lower() in said]
    extra = case.check(d, r) if case.check else None
    if missing or wrong or extra:
        return "message", "; ".join([*(f"does not say {w!r}" for w in missing), *(f"says {w!r}" for w in wrong),
                                     *([extra] if extra else [])])  # fmt: skip
    return "ok", ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the cases whose name contains this")
    parser.add_argument("-v", action="store_true", help="print each case's output")
    args = parser.parse_args()
    counts: dict[str, int] = {}
    for case in (c for c in CASES if args.k in c.name):
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            if case.setup:
                case.setup(d)
            started = time.perf_counter()
            r = _elbox(d, case.args)
            verdict, detail = judge(case, r, d)
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"{verdict:<9} exit {r.returncode:>3}  {time.perf_counter() - started:5.1f}s  {case.name}"
              + (f"  ({detail})" if detail else ""), flush=True)  # fmt: skip
        if args.v:
            print("   | " + (r.stdout + r.stderr).strip().replace("\n", "\n   | "))
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"tracebacks {counts.get('traceback', 0)}, silent acceptances {counts.get('silent', 0)}")
    sys.exit(0 if set(counts) <= {"ok"} else 1)


if __name__ == "__main__":
    main()
