"""Data-parallel training over 2 CPU processes (torchrun, Gloo): the same training as one process with the
same global batch, one run directory, and a clear failure when a process crashes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqrec import distributed
from seqrec.data.batching import ClozeBatch, NextItemBatch, PairBatch
from seqrec.errors import SeqrecError

from conftest import cyclic_frame

TESTS = Path(__file__).parent
OPTIONS = ["--model", "sasrec", "--epochs", "3", "--batch-size", "32", "--dim", "16", "--max-len", "10",
           "--dropout", "0", "--lr", "0.005", "--no-progress", "--valid-users", "200"]


def run_seqrec(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "seqrec", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "log.csv"
    cyclic_frame(n_users=300, length=14, min_length=4).to_csv(path, index=False)
    return path


def epochs(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "training.json").read_text())["epochs"]


def test_two_processes_train_as_one_with_the_same_global_batch(log_file, tmp_path):
    one = run_seqrec("train", "--data", str(log_file), "--out", "one", *OPTIONS, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    two = run_seqrec("train", "--data", str(log_file), "--out", "two", *OPTIONS, "--devices", "2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert "process 0 of 2 (gloo)" in two.stderr and "process 1 of 2" not in two.stderr  # one reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # one run directory, nothing else
    single, parallel = epochs(tmp_path / "one"), epochs(tmp_path / "two")
    assert len(single) == len(parallel) == 3
    for a, b in zip(single, parallel):  # the same loss curve, to float-reduction order
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["valid"]["NDCG@10"] == pytest.approx(a["valid"]["NDCG@10"], abs=1e-4)
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text())["metrics"] for name in ("one", "two")]
    assert metrics[1]["NDCG@10"] == pytest.approx(metrics[0]["NDCG@10"], abs=1e-3)


def test_a_crashed_process_fails_the_run_with_a_clear_message(log_file, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-c", "import sys; from seqrec import distributed; "
               "sys.exit(distributed.launch(sys.argv[1:], 2, module='crash_worker'))",
               "train", "--data", str(log_file), "--out", "crashed", *OPTIONS, "--devices", "2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode != 0
    assert "injected failure in process 1" in result.stderr
    assert "distributed training failed: process 1 (exit code 1) failed first" in result.stderr
    assert not (tmp_path / "crashed").exists()


def test_devices_are_refused_where_training_cannot_be_split(log_file, tmp_path):
    gru = run_seqrec("train", "--data", str(log_file), "--out", "gru", "--model", "gru4rec", "--devices", "2",
                 cwd=tmp_path)
    assert gru.returncode == 2 and "session-parallel batches" in gru.stderr and "--batching padded" in gru.stderr
    pop = run_seqrec("train", "--data", str(log_file), "--out", "pop", "--model", "poprec", "--devices", "2",
                 cwd=tmp_path)
    assert pop.returncode == 2 and "poprec has no training loop" in pop.stderr


def test_shards_split_every_row_field_and_their_loss_shares_add_up(monkeypatch):
    window = torch.tensor([[0, 0, 3, 4], [0, 5, 6, 7], [1, 2, 3, 4], [0, 0, 0, 9], [0, 0, 8, 9]])
    batch = NextItemBatch(window, weight=1.5)
    parts = [distributed.shard(batch, r, 2) for r in range(2)]
    assert parts[0].window.tolist() == window[0::2].tolist() and parts[1].window.tolist() == window[1::2].tolist()
    assert parts[0].weight == 1.5
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    assert sum(distributed.position_share(p, batch) for p in parts) == pytest.approx(2.0)  # DDP divides by 2
    cloze = ClozeBatch(window, window.clone(), window > 4)
    assert distributed.shard(cloze, 1, 2).chosen.tolist() == (window > 4)[1::2].tolist()
    pairs = PairBatch(torch.arange(3), torch.zeros(3, dtype=torch.long), torch.arange(3) + 1, torch.ones(3, 4))
    part = distributed.shard(pairs, 1, 2)
    assert part.users.tolist() == [1] and part.negatives.shape == (1, 4)
