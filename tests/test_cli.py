"""The CLI, in-process: ``main(argv) -> int``."""

import json

import pandas as pd
import pytest

import seqrec
from seqrec.cli import main

from conftest import cyclic_frame

FAST = ["--max-len", "10", "--dim", "16", "--epochs", "3", "--batch-size", "64", "--lr", "0.01", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "log.csv"
    cyclic_frame(n_users=60, string_ids=True).to_csv(data, index=False)
    out = root / "run"
    code = main(["train", "--data", str(data), "--model", "sasrec", "--loss", "ce", "--out", str(out),
                 "--recommendations", str(root / "top.csv"), *FAST])
    assert code == 0
    return out


def test_train_writes_a_complete_run_directory(run_dir, capsys):
    for name in ("config.json", "vocab_items.parquet", "vocab_users.parquet", "weights.safetensors",
                 "histories.npz", "split.npz", "metrics.json", "training.json"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "sasrec" and config["params"]["loss"] == "ce" and config["split"]["kind"] == "leave_one_out"
    assert config["run"]["data"].endswith("log.csv") and "loss" not in config["run"]  # run options apart
    history = json.loads((run_dir / "training.json").read_text())
    assert len(history["epochs"]) == 3 and "NDCG@10" in history["epochs"][0]["valid"]
    top = pd.read_csv(run_dir.parent / "top.csv")
    assert top["user_id"].nunique() == 60 and len(top) == 600


def test_evaluate_json(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"HR@10", "NDCG@10", "MRR@20"} <= set(result["metrics"])
    assert result["protocol"]["candidates"].startswith("full ranking") and result["protocol"]["seen_filtering"] is True
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(result["metrics"])
    assert main(["evaluate", str(run_dir), "--json", "--protocol", "sampled"]) == 0
    sampled = json.loads(capsys.readouterr().out)
    assert "sampled_HR@10" in sampled["metrics"] and "SAMPLED" in sampled["protocol"]["candidates"]


def test_recommend_history_json(run_dir, capsys):
    assert main(["recommend", str(run_dir), "--history", "sku3,sku4,ghost", "--k", "5", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["items"]) == 5 and payload["unknown_items"] == ["ghost"]
    assert not {"sku3", "sku4"} & set(payload["items"])


@pytest.mark.parametrize("name", ["recs.csv", "recs.parquet"])
def test_recommend_all_users_to_file(run_dir, tmp_path, name):
    out = tmp_path / name
    assert main(["recommend", str(run_dir), "--users", "all", "--k", "3", "--output", str(out)]) == 0
    frame = pd.read_parquet(out) if name.endswith("parquet") else pd.read_csv(out)
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score"] and len(frame) == 180


def test_unknown_option_and_bad_value_list_valid_ones(capsys):
    assert main(["train", "--data", "x.csv", "--out", "r", "--colour", "red"]) == 2
    err = capsys.readouterr().err
    assert "unknown option(s) ['--colour', 'red']" in err and "--loss" in err and "--max-len" in err
    assert main(["train", "--data", "x.csv", "--out", "r", "--loss", "mse"]) == 2
    expected = "unknown loss 'mse'; choose from ['ce', 'bce', 'sampled_ce', 'gbce', 'bpr_max', 'top1_max']"
    assert expected in capsys.readouterr().err


def test_config_file_with_flags_winning(tmp_path, capsys):
    data = tmp_path / "log.csv"
    cyclic_frame(n_users=30).to_csv(data, index=False)
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{data}"\nloss = "bce"\nepochs = 1\nmax_len = 8\nprogress = false\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--epochs", "2"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["params"]
    assert saved["loss"] == "bce" and saved["epochs"] == 2 and saved["max_len"] == 8
    config.write_text('data = "x"\nlearning_rate = 0.1\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "option(s) ['learning_rate'] are neither run options nor options of model 'sasrec'" in err and "'lr'" in err
    config.write_text('data = "x"\nmodel = "gru4rec"\nbatching = "padded"\nepochs = "many"\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "bad")]) == 2
    assert "option epochs must be int, got 'many'" in capsys.readouterr().err


def test_time_budget_flag_stops_training_and_is_reported(tmp_path, capsys):
    data = tmp_path / "log.csv"
    cyclic_frame(n_users=30).to_csv(data, index=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--max-len", "8", "--epochs", "5", "--time-budget", "1e-6",
                 "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["epochs_run"] == 1 and metrics["training"]["stop_reason"] == "time_budget"
    assert json.loads((out / "config.json").read_text())["params"]["time_budget"] == 1e-6
    assert main(["train", "--data", str(data), "--time-budget", "soon", "--out", str(out)]) == 2
    assert "--time-budget" in capsys.readouterr().err


def test_refit_flag_retrains_on_train_and_valid_and_reports_the_selection(tmp_path):
    data = tmp_path / "log.csv"
    cyclic_frame(n_users=30).to_csv(data, index=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--max-len", "8", "--epochs", "3", "--patience", "3",
                 "--refit", "true", "--out", str(out), "--no-progress"]) == 0
    training = json.loads((out / "metrics.json").read_text())["training"]
    selection = training["selection"]
    assert training["refit_on"] == "train+valid" and selection["epochs_run"] == 3
    assert training["epochs_run"] == selection["best_epoch"]  # the saved model trained for the chosen epochs
    assert training["n_train_valid_events"] == 30 * 11  # every event but each user's test target
    history = json.loads((out / "training.json").read_text())
    assert len(history["epochs"]) == selection["best_epoch"] and not history["epochs"][-1]["valid"]


def test_bad_data_is_a_clean_error(tmp_path, capsys):
    data = tmp_path / "log.csv"
    data.write_text("user_id,item_id,when\n1,2,3\n")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqrec: error:") and str(data) in err and "'timestamp'" in err
    assert "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "nowhere"), "--json"]) == 2


@pytest.mark.parametrize("model, extra", [("bert4rec", ["--mask-prob", "0.4", "--head", "dot"]),
                                          ("gru4rec", ["--n-negatives", "8", "--batch-size", "16"]),
                                          ("gru4rec+", ["--n-negatives", "8"])])
def test_train_each_model_on_the_session_protocol(tmp_path, model, extra, capsys):
    data = tmp_path / "sessions.csv"
    cyclic_frame(n_users=80, length=8, min_length=2).to_csv(data, index=False)
    out = tmp_path / model
    code = main(["train", "--data", str(data), "--model", model, "--split", "session", "--test-fraction", "0.2",
                 "--out", str(out), "--max-len", "10", "--dim", "16", "--epochs", "2", "--no-progress", *extra])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == model and config["split"]["kind"] == "session"
    assert config["params"]["dim"] == 16  # set
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["seen_filtering"] is False  # the session protocol keeps the session's items
    assert {"HR@20", "MRR@20"} <= set(metrics["metrics"])
    assert main(["recommend", str(out), "--history", "3,4", "--k", "3", "--json"]) == 0


def test_model_defaults_apply_and_foreign_options_are_refused(tmp_path, capsys):
    from seqrec.runs import split_options

    _, params = split_options({"data": "x", "model": "gru4rec", "dim": 8})
    gru = seqrec.build("gru4rec", params)
    assert gru.lr == 0.05 and gru.optimizer == "adagrad_m" and gru.dim == 8  # GRU4Rec's own defaults
    assert seqrec.build("sasrec").lr == 1e-3
    data = tmp_path / "log.csv"
    cyclic_frame(n_users=10).to_csv(data, index=False)
    code = main(["train", "--data", str(data), "--model", "sasrec", "--mask-prob", "0.5", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown option(s) ['--mask-prob', '0.5']; valid options for 'train --model sasrec'" in err


def test_help_lists_one_models_options_grouped_with_help_lines(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "models:\n  sasrec     SASRec (Kang & McAuley" in text and "\n  gru4rec+   " in text
    for group in ("data options", "split options", "evaluation options", "model sasrec options", "training options"):
        assert group in text
    assert "--n-heads" in text and "attention heads" in text and "--mask-prob" not in text
    assert main(["train", "--model", "gru4rec", "--help"]) == 0
    text = capsys.readouterr().out
    assert "model gru4rec options" in text and "--bpreg" in text and "score regularisation of bpr_max" in text
    assert "--n-heads" not in text and "--mask-prob" not in text and "(default: 0.05)" in text
    flags = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert len(flags) == len(set(flags))


def test_a_damaged_run_directory_is_a_named_error_never_a_traceback(run_dir, tmp_path, capsys):
    import shutil

    for name, damage in (("weights.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100])),
                         ("histories.npz", lambda p: p.unlink()),
                         ("vocab_items.parquet", lambda p: p.write_bytes(b"not parquet at all")),
                         ("config.json", lambda p: p.write_text("{ broken")),
                         ("weights.safetensors", lambda p: p.write_bytes(bytes(reversed(p.read_bytes()))))):
        copy = tmp_path / f"copy-{name}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(run_dir, copy)
        damage(copy / name)
        assert main(["recommend", str(copy), "--history", "sku3", "--json"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("seqrec: error:") and str(copy / name) in err and "Traceback" not in err, err
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_saving_over_a_run_is_atomic_and_keeps_the_users_files(run_dir, tmp_path, monkeypatch):
    import shutil

    from seqrec import rundir

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "notes.txt").write_text("mine")
    model = seqrec.load(copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # the save dies after writing part of its files

    monkeypatch.setattr(rundir, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before  # the previous run, whole
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left behind
    monkeypatch.undo()
    model.set_params(seed=5).save(copy)
    assert seqrec.load(copy).seed == 5 and (copy / "notes.txt").read_text() == "mine"
    assert "metrics.json" not in {p.name for p in copy.iterdir()}  # a model saved alone has no test result


@pytest.mark.parametrize("model, extra", [("poprec", []), ("bprmf", ["--epochs", "2", "--no-progress"]),
                                          ("ncf", ["--epochs", "1", "--no-progress"]),
                                          ("caser", ["--epochs", "1", "--length", "3", "--no-progress"]),
                                          ("transrec", ["--epochs", "1", "--no-progress", "--refit"])])
def test_train_recommend_and_evaluate_each_baseline(tmp_path, model, extra, capsys):
    data = tmp_path / "log.csv"
    cyclic_frame(n_users=60, length=8, min_length=3).to_csv(data, index=False)
    out = tmp_path / model
    code = main(["train", "--data", str(data), "--model", model, "--out", str(out), *extra])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "HR@10" in metrics["metrics"] and "wall_seconds" in metrics["training"]
    assert main(["recommend", str(out), "--users", "0,1", "--k", "3", "--json"]) == 0
    assert main(["recommend", str(out), "--history", "3,4", "--k", "3", "--json"]) == 0
    assert main(["evaluate", str(out), "--json", "--protocol", "sampled"]) == 0


def test_evaluate_with_perturbed_histories_prints_the_change_with_its_interval(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--perturb", "shuffle", "--bootstrap", "100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    change = result["change"]["NDCG@10"]
    assert result["perturbation"] == "shuffle" and change["low"] <= change["relative"] <= change["high"]
    assert result["true"]["NDCG@10"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())
                                                      ["metrics"]["NDCG@10"])
    assert "jaccard@10" in result and result["bootstrap"]["paired"] is True
    assert main(["evaluate", str(run_dir), "--perturb", "last_item", "--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert "histories last_item" in text and "95% interval" in text and "Jaccard@10" in text
    assert main(["evaluate", str(run_dir), "--perturb", "sort"]) == 2
