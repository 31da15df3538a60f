"""Bounded memory at scale: the memory plan printed before training (and the refusal of a configuration that
cannot fit), and recommendations for every user in chunks, streamed to a file."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

import seqrec
import seqrec.train
from seqrec.errors import ConfigError
from seqrec.models import MODELS, build
from seqrec.runs import write_recommendations

from conftest import cyclic_frame, tiny_sasrec


@pytest.mark.parametrize("name", [n for n in MODELS if n != "poprec"])
def test_every_neural_model_plans_without_allocating(name):
    plan = build(name).memory_plan(n_items=5_000_000, n_users=1000)  # built on the meta device: instant
    assert plan["parameters"] > 5_000_000 * 4 and plan["gradients"] == plan["parameters"]
    assert plan["total"] == sum(plan[k] for k in ("parameters", "gradients", "optimizer", "activations"))


def test_the_plan_counts_the_parameters_exactly_and_the_loss_working_set():
    model = seqrec.SASRec(dim=32, max_len=20, batch_size=64)
    plan = model.memory_plan(10_000)
    net = seqrec.nn.SASRecNet(10_000, 20, 32)
    assert plan["parameters"] == 4 * sum(p.numel() for p in net.parameters())
    assert plan["optimizer"] == 2 * plan["parameters"]  # Adam's two moments
    sampled = seqrec.SASRec(dim=32, max_len=20, batch_size=64, loss="sampled_ce", n_negatives=100).memory_plan(10_000)
    in_batch = seqrec.SASRec(dim=32, max_len=20, batch_size=64, loss="sampled_ce", sampler="in_batch").memory_plan(10_000)
    assert "[1280, 100] candidate scores" in sampled["activations_what"]
    assert in_batch["activations"] > sampled["activations"]  # [M, M + K] scores
    assert "fused softmax" in plan["activations_what"]


def test_a_configuration_that_cannot_fit_is_refused_before_training_with_what_to_change(cyclic_split, monkeypatch):
    monkeypatch.setattr("seqrec.models.base.available_memory", lambda device: 10 * 2**20)  # 10 MiB
    with pytest.raises(ConfigError, match=r"training needs ~.* GiB .*more than the 0\.0 GiB available on cpu: "
                                          r"use a sampled loss .*--batch-size"):
        tiny_sasrec(dim=256, batch_size=1024).fit(cyclic_split.train)


def test_the_plan_is_logged_before_training(cyclic_split, caplog):
    with caplog.at_level(logging.INFO, logger="seqrec"):
        tiny_sasrec(epochs=1).fit(cyclic_split.train)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("memory plan"))
    assert f"{cyclic_split.train.n_items} items on cpu" in line and "GiB available" in line


@pytest.fixture(scope="module")
def fitted(cyclic_split):
    return tiny_sasrec(epochs=2).fit(cyclic_split.train)


def test_recommendations_in_chunks_of_users_and_bounded_passes_are_the_same(fitted, monkeypatch):
    whole = fitted.recommend_users("all", k=5)
    chunks = list(fitted.iter_recommend_users("all", k=5, chunk=100))
    assert len(chunks) == -(-fitted.vocab_.n_users // 100)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    monkeypatch.setattr("seqrec.models.base.SCORE_ELEMENTS", 3 * fitted.vocab_.n_items)  # 3 rows per pass
    pd.testing.assert_frame_equal(fitted.recommend_users("all", k=5), whole)


@pytest.mark.parametrize("suffix", [".parquet", ".csv.gz"])
def test_recommendations_for_all_users_stream_to_one_file(fitted, tmp_path, monkeypatch, suffix):
    original = fitted.iter_recommend_users
    monkeypatch.setattr(fitted, "iter_recommend_users", lambda *a, **kw: original(*a, **kw, chunk=64))
    path = write_recommendations(fitted, "all", 5, True, tmp_path / f"recs{suffix}")
    written = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    expected = fitted.recommend_users("all", k=5)
    assert len(written) == len(expected) == 5 * fitted.vocab_.n_users
    assert written["user_id"].tolist() == expected["user_id"].tolist()
    assert written["item_id"].tolist() == expected["item_id"].tolist()
    assert np.allclose(written["score"], expected["score"], rtol=1e-6)


def test_sparse_items_move_only_the_rows_a_step_touched():
    log = seqrec.read_interactions(cyclic_frame(n_users=64, n_items=2000))
    model = tiny_sasrec(loss="sampled_ce", n_negatives=4, sparse_items=True, epochs=1, dropout=0.0, batch_size=8)
    before = {}

    class Step(seqrec.train.Callback):
        def on_batch(self, batch):
            self.batch = batch
            before.update({k: v.detach().clone() for k, v in model.net_.state_dict().items()})

        def on_backward(self):
            grad = model.net_.item_emb.weight.grad
            assert grad.is_sparse
            self.rows = set(grad.coalesce().indices()[0].tolist())

        def on_step(self, step):
            return True  # one step

    callback = Step()
    model.fit(log, callbacks=[callback])
    after = model.net_.state_dict()
    moved = set(torch.nonzero((after["item_emb.weight"] != before["item_emb.weight"]).any(1))[:, 0].tolist())
    assert moved and moved <= callback.rows and len(moved) < model.net_.n_items  # lazy: only the touched rows
    assert not torch.equal(after["blocks.0.attn.query.weight"], before["blocks.0.attn.query.weight"])  # dense Adam


def test_sparse_items_are_refused_with_the_full_softmax():
    with pytest.raises(ConfigError, match="sparse_items needs a sampled loss"):
        seqrec.SASRec(loss="ce", sparse_items=True).validate()
