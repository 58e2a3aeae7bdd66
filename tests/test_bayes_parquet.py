"""bayes.parquet: a large Parquet file streamed into a cached, memory-mapped folder of .npy files."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from command import run_cli

from elbox.bayes import parquet
from elbox.bayes.files import load_data_file
from elbox.bayes.parquet import STREAM_VARIABLE, cache_folder, stream_parquet, streams
from elbox.errors import ElboxError

pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (pip install pyarrow)")
pq = pytest.importorskip("pyarrow.parquet")

MODEL = '''
from torch.distributions import Normal
from elbox import bayes

model = bayes.Model({"beta": bayes.Param(2)}, lambda p: Normal(0.0, 1.0).log_prob(p["beta"]).sum(-1),
                    lambda p, d: Normal(p["beta"] @ d["X"].T, 1.0).log_prob(d["y"]), observed=("X", "y"))
'''


def _table(n: int = 1_003, seed: int = 0) -> "pa.Table":
    """Every kind of column the in-memory reader takes: float64 and float32, int32, uint16, bool, a matrix X[0], X[1]
    of an int and a float column (stacked to float64), and a pandas index that both readers leave out."""
    rng = np.random.default_rng(seed)
    columns = {"y": rng.normal(size=n), "X[1]": rng.normal(size=n).astype(np.float32),
               "X[0]": np.arange(n, dtype=np.int32), "g": rng.integers(0, 7, n), "u": np.arange(n, dtype=np.uint16),
               "b": rng.random(n) > 0.5}  # fmt: skip
    table = pa.Table.from_pandas(pd.DataFrame(columns, index=np.arange(n) * 3))
    assert "__index_level_0__" in table.column_names
    return table


def _write(path: Path, table: "pa.Table", rows: int = 100) -> Path:
    pq.write_table(table, path, row_group_size=rows)
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-table.num_rows // rows)  # several row groups
    return path


def test_streamed_arrays_are_the_in_memory_readers_bit_for_bit_and_memory_mapped(tmp_path, monkeypatch):
    path = _write(tmp_path / "data.parquet", _table())
    monkeypatch.setenv(STREAM_VARIABLE, "never")
    in_memory = load_data_file(path)
    assert not cache_folder(path).exists()
    monkeypatch.setenv(STREAM_VARIABLE, "always")
    streamed = load_data_file(path)
    assert sorted(streamed) == sorted(in_memory) == ["X", "b", "g", "u", "y"]
    for name, a in in_memory.items():
        b = streamed[name]
        assert isinstance(b, np.memmap) and b.dtype == a.dtype and b.shape == a.shape, name
        assert a.tobytes() == np.asarray(b).tobytes(), name  # bitwise, the last row group included
    assert streamed["X"].shape == (1_003, 2) and streamed["X"].dtype == np.float64
    assert streamed["b"].dtype == np.int64 and streamed["u"].dtype == np.int64
    assert load_data_file(cache_folder(path)).keys() == streamed.keys()  # the cache is a data folder of its own


def test_the_cache_is_reused_while_the_file_is_unchanged_and_rebuilt_when_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv(STREAM_VARIABLE, "always")
    path = _write(tmp_path / "data.parquet", _table(seed=0))
    first = load_data_file(path)["y"].copy()
    written = (cache_folder(path) / "y.npy").stat()

    def no_write(*args: object) -> None:
        raise AssertionError("the cache was written again")

    with monkeypatch.context() as m:
        m.setattr(parquet, "_write", no_write)
        assert np.array_equal(load_data_file(path)["y"], first)
    assert (cache_folder(path) / "y.npy").stat().st_ino == written.st_ino
    _write(path, _table(seed=1))
    os.utime(path, ns=(written.st_mtime_ns + 10**9, written.st_mtime_ns + 10**9))  # a new time, whatever the clock
    second = load_data_file(path)["y"]
    assert np.array_equal(second, load_data_file(path)["y"]) and not np.array_equal(second, first)
    monkeypatch.setenv(STREAM_VARIABLE, "never")
    assert np.array_equal(load_data_file(path)["y"], second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "data.parquet.npy"]  # no temporary left


def test_a_cache_another_process_finished_first_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(STREAM_VARIABLE, "always")
    path = _write(tmp_path / "data.parquet", _table(n=50))
    folder = stream_parquet(path)
    inode = (folder / "y.npy").stat().st_ino
    ours = shutil.copytree(folder, tmp_path / ".ours")  # this process's conversion, finished second
    parquet._replace(folder, ours, parquet._stamp(path))
    assert (folder / "y.npy").stat().st_ino == inode and not ours.exists()


def test_auto_streams_above_the_threshold_of_decoded_bytes(tmp_path, monkeypatch):
    path = _write(tmp_path / "data.parquet", _table(n=200))
    monkeypatch.delenv(STREAM_VARIABLE, raising=False)
    assert not streams(path)  # 200 rows x 7 columns (the index's included) x 8 bytes: far below 1 GiB
    monkeypatch.setattr(parquet, "STREAM_BYTES", 200 * 7 * 8)
    assert not streams(path)
    monkeypatch.setattr(parquet, "STREAM_BYTES", 200 * 7 * 8 - 1)
    assert streams(path) and isinstance(load_data_file(path)["y"], np.memmap)
    monkeypatch.setenv(STREAM_VARIABLE, "sometimes")
    with pytest.raises(ElboxError, match=r"`always`.*`never`.*`auto`"):
        streams(path)


MEASURE = """
import json, sys, tracemalloc
import pyarrow as pa
import pyarrow.parquet
from elbox.bayes import parquet

parquet.BATCH_ROWS = int(sys.argv[2])
pa.table({"a": [1.0]}).to_pandas()  # pandas and pyarrow's lazy imports, before the count starts
tracemalloc.start()
parquet.stream_parquet(sys.argv[1])
print(json.dumps({"numpy": tracemalloc.get_traced_memory()[1], "arrow": pa.default_memory_pool().max_memory()}))
"""


def test_converting_holds_about_one_row_group_in_memory_not_the_file(tmp_path):
    """NumPy's and pandas' allocations (tracemalloc) and pyarrow's (its pool's peak, in a fresh process)."""
    n, rows = 200_000, 5_000
    rng = np.random.default_rng(0)
    path = _write(tmp_path / "big.parquet", pa.table({f"x[{j}]": rng.normal(size=n) for j in range(5)}), rows)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(rows)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    peaks, full = json.loads(done.stdout), n * 5 * 8  # 8 MB
    for what, peak in peaks.items():
        assert peak < full / 4, f"converting allocated {peak / 1e6:.1f} MB ({what}) for {full / 1e6:.0f} MB of data"
    table = pq.read_table(path)
    assert np.array_equal(np.load(cache_folder(path) / "x.npy"), np.stack([c.to_numpy() for c in table.columns], 1))


@pytest.mark.parametrize("failure", ["no room", "not writable", "disk full while writing"])
def test_an_unwritable_or_full_destination_is_refused_in_one_paragraph_exit_2(tmp_path, capsys, monkeypatch, failure):
    from elbox.bayes.files import write_data_file

    (tmp_path / "model.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    path = write_data_file(tmp_path / "data.parquet", {"X": rng.normal(size=(50, 2)), "y": rng.normal(size=50)})
    monkeypatch.setenv(STREAM_VARIABLE, "always")
    if failure == "no room":
        monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12, 100))
    elif failure == "not writable":
        def refuse(**_: object) -> str:
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

        monkeypatch.setattr(parquet.tempfile, "mkdtemp", refuse)
    else:
        def full(*_: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(parquet, "_write", full)
    code, _, err = run_cli(capsys, "fit", tmp_path / "model.py", "--data", path, "--out", tmp_path / "run",
                           "--no-progress")  # fmt: skip
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0, err
    assert str(cache_folder(path)) in err and "writable" in err and f"{STREAM_VARIABLE}=never" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "model.py"]  # nothing half-written


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    path = _write(tmp_path / "data.parquet", _table(n=50))
    monkeypatch.setenv(STREAM_VARIABLE, "always")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ElboxError, match="cannot be written"):
            load_data_file(path)
    finally:
        tmp_path.chmod(0o755)


def test_what_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(STREAM_VARIABLE, "always")
    text = _write(tmp_path / "text.parquet", pa.table({"y": [1.0, 2.0], "name": ["a", "b"]}))
    with pytest.raises(ElboxError, match=r"'name'.*not numbers"):
        load_data_file(text)
    gap = _write(tmp_path / "gap.parquet", pa.table({"X[0]": [1.0, 2.0], "X[2]": [1.0, 2.0]}))
    with pytest.raises(ElboxError, match=r"X\[0\], X\[1\], \.\.\. with no gap"):
        load_data_file(gap)
    slash = _write(tmp_path / "slash.parquet", pa.table({"a/b": [1.0, 2.0]}))
    with pytest.raises(ElboxError, match="rename the column"):
        load_data_file(slash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gap.parquet", "slash.parquet", "text.parquet"]
    missing = _write(tmp_path / "missing.parquet", pa.table({"y": [1.0, None, 2.0]}), rows=2)
    with pytest.raises(ElboxError, match="missing or infinite"):
        load_data_file(missing)
    assert not cache_folder(missing).exists()
    theirs = _write(tmp_path / "theirs.parquet", pa.table({"y": [1.0, 2.0]}))
    cache_folder(theirs).mkdir()
    np.save(cache_folder(theirs) / "keep.npy", np.zeros(3))
    with pytest.raises(ElboxError, match="not elbox's cache"):
        load_data_file(theirs)
    assert (cache_folder(theirs) / "keep.npy").exists()


def test_elbox_fit_gives_the_same_fit_streamed(tmp_path, capsys, monkeypatch):
    from elbox.bayes.files import write_data_file

    (tmp_path / "model.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    path = write_data_file(tmp_path / "data.parquet", {"X": x, "y": x @ np.array([1.0, -0.5]) + rng.normal(size=300)})
    outputs = []
    for choice in ("never", "always"):
        monkeypatch.setenv(STREAM_VARIABLE, choice)
        code, text, err = run_cli(capsys, "fit", tmp_path / "model.py", "--data", path, "--family", "diagonal",
                                  "--no-progress")  # fmt: skip
        assert code == 0, err
        outputs.append(text.split("beta", 1)[1][:200])
    assert cache_folder(path).is_dir() and outputs[0] == outputs[1]
