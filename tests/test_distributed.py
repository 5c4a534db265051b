"""Scans on a Dask cluster (lowrank_blocks.distributed): the serial table, whatever happens.

One ``LocalCluster`` of two worker processes (one thread each, no dashboard) serves the whole
file.  A synthetic checkpoint is written by hand as ``.safetensors``; its tensors are read by the
workers from the file (the tasks carry only names and offsets).  A worker is killed mid-run by a
reader that ends its process the first time it is called (a marker file makes it do so once):
the table must still come back whole, equal to the serial one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from lowrank_blocks import analyze_layers  # noqa: E402
from lowrank_blocks.cli import main  # noqa: E402
from lowrank_blocks.distributed import MatrixTask, connect, map_matrices  # noqa: E402
from lowrank_blocks.models import ModelMatrices, NamedMatrix, open_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A float32 .safetensors file written by hand (8-byte header length, JSON header, data)."""
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def _tensors(n_layers: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n_layers):
        m, n = 48 + 8 * (k % 3), 40 + 8 * (k % 2)
        rank = 3 + k
        out[f"layers.{k}.weight"] = (rng.standard_normal((m, rank)) @ rng.standard_normal(
            (rank, n)) + 0.05 * rng.standard_normal((m, n))).astype(np.float32)
        out[f"layers.{k}.bias"] = np.zeros(m, dtype=np.float32)
    return out


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                       dashboard_address=None)
    dask_client = distributed.Client(cluster)
    try:
        yield dask_client
    finally:
        dask_client.close()
        cluster.close()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_safetensors(tmp_path_factory.mktemp("ckpt") / "model.safetensors", _tensors())


OPTIONS = {"lora_rank": 2, "grids": [2, 4], "diagonal": [2, 4], "progress": False}


@pytest.fixture(scope="module")
def serial(checkpoint) -> Any:
    return analyze_layers(checkpoint, **OPTIONS)


def test_distributed_scan_equals_serial(client, checkpoint, serial):
    dist = analyze_layers(checkpoint, client=client, **OPTIONS)
    pd.testing.assert_frame_equal(dist.to_frame(), serial.to_frame(), check_exact=True)
    pd.testing.assert_frame_equal(dist.summary(), serial.summary(), check_exact=True)
    assert dist.skipped_frame()["name"].tolist() == serial.skipped_frame()["name"].tolist()
    assert dist.source == serial.source == "checkpoint"
    # A scheduler address joins the same cluster.
    by_address = analyze_layers(checkpoint, client=client.scheduler.address, **OPTIONS)
    pd.testing.assert_frame_equal(by_address.to_frame(), serial.to_frame(), check_exact=True)


@dataclasses.dataclass(frozen=True)
class DieOnce:
    """A reader that ends its worker's process the first time it is called (then reads)."""

    inner: Any
    marker: str

    def load(self) -> np.ndarray:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies: no exception, no clean-up
        return self.inner.load()

    def where(self) -> str:
        return self.inner.where()


def test_a_worker_killed_mid_run_still_gives_the_full_table(client, checkpoint, serial,
                                                            tmp_path):
    mm = open_model(checkpoint)
    marker = tmp_path / "killed"
    victim = 3
    matrices = [dataclasses.replace(m, reader=DieOnce(m.reader, str(marker)))
                if k == victim else m for k, m in enumerate(mm.matrices)]
    killing = ModelMatrices(matrices, mm.skipped, mm.kind, mm.source)
    pids = set(client.run(os.getpid).values())
    dist = analyze_layers(killing, client=client, retries=1, **OPTIONS)
    assert marker.exists() and int(marker.read_text()) in pids  # a worker did die
    frame = dist.to_frame()
    assert frame["name"].tolist() == serial.to_frame()["name"].tolist()  # no row lost, none twice
    pd.testing.assert_frame_equal(frame, serial.to_frame(), check_exact=True)
    # The nanny restarts the dead worker: the cluster has its two workers again.
    client.wait_for_workers(2, timeout=30)


def _name_and_pid(matrix: NamedMatrix) -> tuple[str, int, float]:
    time.sleep(0.05 * (len(matrix.name) % 3))  # finish out of order
    return matrix.name, os.getpid(), float(np.asarray(matrix.load(), dtype=np.float64).sum())


def test_map_matrices_keeps_the_order_and_reads_on_the_workers(client, checkpoint):
    mm = open_model(checkpoint)
    out = map_matrices(_name_and_pid, mm, client=client, progress=False)
    assert [name for name, _, _ in out] == mm.names
    here = os.getpid()
    assert all(pid != here for _, pid, _ in out)
    tensors = _tensors()
    for name, _, total in out:
        assert total == pytest.approx(float(tensors[name].astype(np.float64).sum()), rel=1e-6)
    assert map_matrices(_name_and_pid, [], client=client) == []
    # Without a client: the same list, computed here.
    serial = map_matrices(_name_and_pid, mm, progress=False)
    assert [(n, t) for n, _, t in serial] == [(n, t) for n, _, t in out]


def test_dask_progress_bar_on_standard_error(client, checkpoint, serial, capsys, monkeypatch):
    import lowrank_blocks.distributed as dist

    monkeypatch.setattr(dist, "_terminal", lambda: True)  # as on a terminal
    got = analyze_layers(checkpoint, client=client, **{**OPTIONS, "progress": True})
    out, err = capsys.readouterr()
    assert "100% Completed" in err and out == ""  # Dask's bar, on stderr: stdout stays clean
    pd.testing.assert_frame_equal(got.to_frame(), serial.to_frame(), check_exact=True)


def test_a_task_failing_on_bad_data_names_the_tensor(client, tmp_path):
    tensors = _tensors(3)
    tensors["layers.1.weight"][2, 3] = np.nan
    path = write_safetensors(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(ValueError, match=r"layers\.1\.weight.*NaN"):
        analyze_layers(path, client=client, retries=0, **OPTIONS)


def _fails(matrix: NamedMatrix) -> None:
    raise KeyError("no such thing")


def test_errors_name_the_matrix_and_its_file(client, checkpoint):
    mm = open_model(checkpoint)
    with pytest.raises(KeyError, match=r"matrix 'layers\.0\.weight' of .*model\.safetensors"):
        map_matrices(_fails, mm, client=client, retries=0, progress=False)
    with pytest.raises(KeyError, match=r"matrix 'layers\.0\.weight'"):
        MatrixTask(_fails)(mm[0])


def test_cli_scan_on_workers_and_on_a_scheduler(client, checkpoint, serial, capsys):
    def csv(*extra: str) -> pd.DataFrame:
        code = main(["scan", str(checkpoint), "--lora-rank", "2", "--csv", "--no-progress",
                     *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        return pd.read_csv(io.StringIO(out))

    plain = csv()
    pd.testing.assert_frame_equal(csv("--scheduler", client.scheduler.address), plain)
    pd.testing.assert_frame_equal(csv("--workers", "2"), plain)
    code = main(["scan", str(checkpoint), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_bad_clients_and_retries_are_refused_before_any_work(checkpoint):
    with pytest.raises(TypeError, match="client="):
        with connect(2.5):
            pass
    with pytest.raises(ValueError, match="client"):
        with connect(0):
            pass
    with pytest.raises(ValueError, match="retries"):
        analyze_layers(checkpoint, client=2, retries=-1, **OPTIONS)
    with pytest.raises(TypeError, match="callable"):
        map_matrices(3, [], client=None)


def test_the_core_imports_and_runs_without_dask(tmp_path):
    """``import lowrank_blocks`` and a serial scan need no Dask; a client asks for it."""
    code = (
        "import sys\n"
        "for name in ('dask', 'distributed', 'zarr'):\n"
        "    sys.modules[name] = None\n"
        "import numpy as np, lowrank_blocks\n"
        "from lowrank_blocks import analyze_layers, distributed, outofcore\n"
        "res = analyze_layers({'a': np.eye(8)}, lora_rank=1, progress=False)\n"
        "assert len(res.to_frame()) == 1\n"
        "try:\n"
        "    analyze_layers({'a': np.eye(8)}, lora_rank=1, progress=False, client=2)\n"
        "except ImportError as exc:\n"
        "    assert 'lowrank_blocks[distributed]' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
        "assert not any(m.startswith(('dask', 'distributed')) and sys.modules[m] is not None\n"
        "               for m in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_model_allocation_on_the_cluster_equals_the_serial_one(client, checkpoint):
    """``allocate_model(client=...)``: the spectra come from the workers, the ranks and every
    error are those of the serial run (same order, same numbers)."""
    from lowrank_blocks.model_budget import allocate_model

    kwargs = dict(lora_rank=2, structures="global,grid:2", pattern="*.weight", progress=False)
    serial = allocate_model(checkpoint, **kwargs)
    remote = allocate_model(checkpoint, client=client, **kwargs)
    pd.testing.assert_frame_equal(remote.to_frame(), serial.to_frame())
    assert remote.total_error == serial.total_error
    assert remote.lower_bound == serial.lower_bound


def test_allocate_command_with_workers_prints_the_serial_table(checkpoint, capsys):
    assert main(["allocate", str(checkpoint), "--lora-rank", "2", "--pattern", "*.weight",
                 "--csv", "--no-progress"]) == 0
    serial = capsys.readouterr().out
    assert main(["allocate", str(checkpoint), "--lora-rank", "2", "--pattern", "*.weight",
                 "--csv", "--no-progress", "--workers", "2"]) == 0
    assert capsys.readouterr().out == serial
