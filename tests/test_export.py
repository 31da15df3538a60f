"""ONNX export: each exportable model's graphs against PyTorch on real histories (MovieLens-100K), the
manifest, the CLI, and the refusals."""

import json

import numpy as np
import onnxruntime as ort
import pytest

import seqrec
from seqrec.cli import main
from seqrec.data.sequences import Histories
from seqrec.errors import ConfigError
from seqrec.export import export_onnx, known_histories

from conftest import cyclic_frame, shared_dataset

SMALL = {"max_len": 20, "dim": 32, "epochs": 1, "batch_size": 128, "progress": False, "seed": 0}


@pytest.fixture(scope="module")
def movielens():
    return seqrec.leave_one_out(seqrec.read_interactions(shared_dataset("movielens-100k")))


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gru4rec"])
def test_onnx_matches_pytorch_on_real_histories(movielens, tmp_path, name):
    model = seqrec.MODELS[name](**SMALL).fit(movielens.train)
    manifest = export_onnx(model, tmp_path / "onnx")
    parity = manifest["parity"]
    assert parity["histories"] == 256 and parity["max_abs_score_diff"] < 1e-3 and parity["top10_identical_share"] == 1.0
    # independently of export's own check: the full graph and the encoder on other users' histories
    histories = known_histories(model, 300, seed=7)
    windows = np.ascontiguousarray(histories.windows(model.max_len))
    topk = ort.InferenceSession(str(tmp_path / "onnx" / "topk.onnx"), providers=["CPUExecutionProvider"])
    ids, scores = topk.run(None, {"ids": windows, "k": np.array(10), "exclude_seen": np.ones(len(windows), bool)})
    rows = Histories.from_lists([w[w != 0] for w in windows])
    ref_ids, ref_scores = model.rank(rows, k=10, exclude_seen=True)
    assert (ids == ref_ids).all()
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
    encoder = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    short = np.ascontiguousarray(windows[:, -5:])  # a shorter window than max_len is accepted
    users = encoder.run(None, {"ids": short})[0]
    table = np.load(tmp_path / "onnx" / "item_embeddings.npy")
    full = users @ table.T + (np.load(tmp_path / "onnx" / "item_bias.npy") if manifest["has_item_bias"] else 0)
    reference = model.score(Histories.from_lists([w[w != 0] for w in short])).numpy()
    assert np.abs(full - reference).max() < 1e-3
    assert manifest["has_item_bias"] == (model.net_.output_embeddings()[1] is not None)  # GRU4Rec, BERT4Rec's head
    assert (tmp_path / "onnx" / "items.parquet").is_file() and manifest["n_items"] == table.shape[0]


def test_cli_export_of_a_run_directory(tmp_path, capsys):
    data = tmp_path / "log.csv"
    cyclic_frame(n_users=60).to_csv(data, index=False)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "sasrec", "--out", str(run), "--max-len", "8", "--dim", "16",
                 "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    config = json.loads((run / "config.json").read_text())
    assert manifest["weights_sha256"] == config["files"]["weights.safetensors"]["sha256"]
    assert json.loads((run / "onnx" / "export.json").read_text())["parity"] == manifest["parity"]
    assert seqrec.load(run).name == "sasrec"  # the export folder beside the run leaves it loadable


def test_models_without_an_item_window_are_refused(tmp_path):
    log = seqrec.read_interactions(cyclic_frame(n_users=40))
    model = seqrec.PopRec().fit(log)
    with pytest.raises(ConfigError, match="does not export to ONNX"):
        export_onnx(model, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
