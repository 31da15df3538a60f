"""seqrec reproduce: the tables it knows, a --quick smoke run on the shared files, resuming, the labels."""

import json

import pytest

from seqrec import leave_one_out, reproduce
from seqrec.cli import main
from seqrec.errors import ConfigError

from conftest import cyclic_frame, shared_dataset


def test_without_a_table_lists_the_tables(capsys):
    assert main(["reproduce"]) == 0
    text = capsys.readouterr().out
    assert "sasrec-table" in text and "bert4rec-table" in text and "Kang & McAuley" in text


def test_every_published_number_has_a_model_and_every_model_a_published_row():
    from seqrec.models import MODELS

    for table in reproduce.TABLES.values():
        assert {e.label for e in table.entries} == set(table.published)
        assert all(e.model in MODELS for e in table.entries)
        assert all(set(row) == set(table.metrics) for row in table.published.values())


def test_quick_run_writes_table_chart_and_json_and_resumes(tmp_path, capsys):
    shared_dataset("amazon-video-games-sasrec")
    out = tmp_path / "games"
    assert main(["reproduce", "sasrec-table", "--quick", "--models", "poprec,FMC", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["published_file"] and results["quick"]
    assert [r["label"] for r in results["runs"]] == ["PopRec", "FMC"]
    run = results["runs"][0]
    assert set(run["sampled"]) == {"HR@10", "NDCG@10"} and set(run["full"]) == {"HR@10", "NDCG@10"}
    assert run["protocol_card"]["protocol"] == "sampled" and "uniformly" in run["protocol_card"]["candidates"]
    quick_log = reproduce._first_users(shared_dataset("amazon-video-games-sasrec"), reproduce.QUICK_USERS)
    assert quick_log.n_users == reproduce.QUICK_USERS  # fewer than 10,000 test users: every one is evaluated
    assert run["n_test_users"] == len(leave_one_out(quick_log).test) == int((quick_log.lengths >= 3).sum())
    # popularity ties: the paper's tie handling flatters PopRec, and the table says so
    assert run["sampled_optimistic_ties"]["HR@10"] > run["sampled"]["HR@10"]
    table = (out / "table.md").read_text()
    assert "0.4724" in table and "PopRec" in table and "Full ranking" in table and "paper ties" in table
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
    # a later run of another model keeps the earlier ones
    assert main(["reproduce", "sasrec-table", "--quick", "--models", "TransRec", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results["runs"]] == ["PopRec", "FMC", "TransRec"]
    capsys.readouterr()


def test_another_file_is_labelled_and_bad_names_are_refused(tmp_path, caplog):
    path = tmp_path / "log.csv"
    cyclic_frame(n_users=40, n_items=300, length=20).to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        results = reproduce.run_table("bert4rec-table", tmp_path / "out", models=["pop"], data=path, quick=True)
    assert not results["data"]["published_file"] and "not the paper's file" in caplog.text
    assert "NOT the published file" in (tmp_path / "out" / "table.md").read_text()
    with pytest.raises(ConfigError, match="has no model 'nope'"):
        reproduce.run_table("bert4rec-table", tmp_path / "out", models=["nope"], data=path)
    with pytest.raises(ConfigError, match="unknown table"):
        reproduce.run_table("table-9", tmp_path / "out")
    assert main(["reproduce", "sasrec-table", "--seeds", "a", "--out", str(tmp_path)]) == 2
