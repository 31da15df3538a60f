"""Every model passes the contract (tests/contract.py); every loss and batching of each model learns."""

import numpy as np
import pytest
import torch

import seqrec
from seqrec.ids import PAD

from conftest import cyclic_frame, tiny_bert4rec, tiny_gru4rec, tiny_sasrec
from contract import RecommenderContract


class TestSASRec(RecommenderContract):
    make = staticmethod(tiny_sasrec)


class TestBERT4Rec(RecommenderContract):
    make = staticmethod(tiny_bert4rec)


class TestGRU4Rec(RecommenderContract):
    make = staticmethod(tiny_gru4rec)


class TestGRU4RecPadded(RecommenderContract):
    make = staticmethod(lambda **overrides: tiny_gru4rec(**{"batching": "padded", **overrides}))


# every loss each model can train with, and the variants with their own training path
VARIANTS = [pytest.param(lambda loss=loss: tiny_sasrec(loss=loss, n_negatives=8), id=f"sasrec-{loss}")
            for loss in seqrec.SASRec.LOSSES]
VARIANTS += [pytest.param(lambda sampler=sampler: tiny_sasrec(loss="sampled_ce", n_negatives=8, sampler=sampler),
                          id=f"sasrec-sampled_ce-{sampler}") for sampler in ("popularity", "in_batch", "mixed")]
VARIANTS += [pytest.param(lambda: tiny_sasrec(loss="sampled_ce", n_negatives=8, sparse_items=True),
                          id="sasrec-sampled_ce-sparse-items")]
VARIANTS += [pytest.param(lambda loss=loss: tiny_bert4rec(loss=loss, n_negatives=24), id=f"bert4rec-{loss}")
             for loss in ("sampled_ce", "bce", "gbce")]
VARIANTS += [pytest.param(lambda: tiny_bert4rec(norm="rectools", head="dot", init="xavier", item_dropout=0.1,
                                                mask_token_share=0.8, sliding_window=0.5),
                          id="bert4rec-ce-rectools-sliding")]
VARIANTS += [pytest.param(lambda loss=loss, batching=batching: tiny_gru4rec(loss=loss, batching=batching, n_negatives=8),
                          id=f"gru4rec-{batching}-{loss}")
             for batching in ("session", "padded") for loss in ("bpr_max", "top1_max")]
VARIANTS += [pytest.param(lambda: tiny_gru4rec(batching="padded", optimizer="adam", lr=1e-2, n_negatives=0),
                          id="gru4rec-padded-full-ce-adam")]


@pytest.mark.parametrize("make", VARIANTS)
def test_every_loss_and_batching_learns_next_item_is_i_plus_one(make, cyclic_split, request):
    model = make()
    assert model.loss in request.node.callspec.id  # the case trains the loss it is named after
    model.fit(cyclic_split.train, valid=cyclic_split.valid)
    result = seqrec.evaluate(model, cyclic_split.test, k=(1,))
    assert result["metrics"]["HR@1"] >= 0.9, result["metrics"]


@pytest.mark.parametrize("make", [tiny_sasrec, tiny_gru4rec])
def test_full_softmax_learns_without_seen_filtering(make, cyclic_split):
    # bce never uses history items as negatives, so only a full-softmax model must also rank them low;
    # BERT4Rec's Cloze task also rewards the right neighbour, a seen item at inference (62-88% HR@1 here)
    model = make().fit(cyclic_split.train, valid=cyclic_split.valid)
    result = seqrec.evaluate(model, cyclic_split.test, k=(1,), exclude_seen=False)
    assert result["metrics"]["HR@1"] >= 0.9, result["metrics"]


def test_training_history_is_recorded(cyclic_split):
    result = tiny_sasrec(epochs=2).fit(cyclic_split.train, valid=cyclic_split.valid).train_result_
    assert result.best_epoch >= 1 and len(result.epochs) == 2
    record = result.epochs[0]
    assert record.loss > 0 and record.seconds > 0 and "NDCG@10" in record.valid
    assert result.stop_reason == "epochs"


def test_early_stop_is_reported(cyclic_split):
    result = tiny_sasrec(epochs=40, patience=1, lr=1.0).fit(cyclic_split.train, valid=cyclic_split.valid).train_result_
    assert result.stop_reason == "patience" and len(result.epochs) < 40


@pytest.mark.parametrize("split_name, filtered", [("session", False), ("loo", True)])
def test_validation_ranks_with_the_protocol_the_split_carries(split_name, filtered, monkeypatch):
    log = seqrec.read_interactions(cyclic_frame(n_users=64))
    split = seqrec.session_split(log, test_fraction=0.25) if split_name == "session" else seqrec.leave_one_out(log)
    assert split.valid.exclude_seen is filtered and split.test.exclude_seen is filtered
    excluded = []
    original = seqrec.ranking.exclude

    def spy(scores, rows, items):
        excluded.append(len(rows))
        return original(scores, rows, items)

    monkeypatch.setattr(seqrec.ranking, "exclude", spy)
    model = seqrec.SASRec(max_len=10, dim=16, epochs=1, progress=False).fit(split.train, valid=split.valid)
    assert bool(excluded) is filtered  # the caller said nothing: the set's own protocol was used
    metrics = model.train_result_.epochs[0].valid
    assert metrics == seqrec.evaluate(model, split.valid, k=(10,), exclude_seen=filtered)["metrics"]


def test_unknown_loss_lists_the_models_valid_ones():
    with pytest.raises(seqrec.ConfigError, match=r"unknown loss 'mse'; choose from \['ce', 'bce', 'sampled_ce'"):
        tiny_sasrec(loss="mse").fit(cyclic_frame(n_users=8))
    with pytest.raises(seqrec.ConfigError, match=r"choose from \['ce', 'bpr_max', 'top1_max'\]"):
        tiny_gru4rec(loss="bce").fit(cyclic_frame(n_users=8))


def test_options_are_declared_once_with_type_default_and_help():
    for cls in seqrec.MODELS.values():
        types = cls.option_types()
        for name, field in cls.option_fields().items():
            assert field.metadata.get("help"), (cls.name, name)
        cls().validate()  # every declared default has its declared type and passes its own checks
        if issubclass(cls, seqrec.models.NeuralRecommender):
            assert "progress" in types and "seed" in types
    assert seqrec.GRU4RecPlus().loss == "bpr_max" and seqrec.GRU4Rec().loss == "ce"  # DEFAULTS, one declaration
    assert seqrec.GRU4RecPlus.option_fields()["loss"].metadata == seqrec.GRU4Rec.option_fields()["loss"].metadata


def test_constructors_take_keywords_only():
    with pytest.raises(TypeError):
        seqrec.GRU4Rec("ce")  # a positional argument could silently land on the wrong option


@pytest.mark.parametrize("bucketing", [False, True])
def test_every_user_is_trained_once_per_epoch(cyclic_split, bucketing):
    train = cyclic_split.train
    batcher = tiny_sasrec(bucketing=bucketing, batch_size=16).training_batches(train)
    windows = [w for batch in batcher.epoch(torch.Generator().manual_seed(1)) for w in batch.window]
    seen = [tuple(w[w != PAD].tolist()) for w in windows]
    expected = {tuple(train.sequence(u)[-11:].tolist()) for u in range(train.n_users)}
    assert len(seen) == train.n_users and set(seen) == expected
    assert sum(1 for _ in batcher.epoch(torch.Generator().manual_seed(2))) == len(batcher)


def test_windows_hold_pad_left():
    _, _, test = seqrec.leave_one_out(seqrec.read_interactions(cyclic_frame()))
    w = test.windows(20)
    assert (w[:, :9] == PAD).all() and (w[:, 9:] != PAD).all()  # 11-event histories in 20 slots


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
@pytest.mark.parametrize("make", VARIANTS)
def test_learns_on_cuda_and_loads_on_cpu(make, cyclic_split, tmp_path):
    """Every model and loss trains on a GPU (run on a GPU machine: pytest tests -k cuda) and its saved
    weights score the same on a CPU."""
    train, valid, test = cyclic_split
    model = make().set_params(device="cuda")
    model.fit(train, valid=valid)
    assert next(model.net_.parameters()).is_cuda
    on_gpu = seqrec.evaluate(model, test, k=(1, 10))["metrics"]  # scored and ranked on the GPU
    assert on_gpu["HR@1"] >= 0.9
    batch = test.batch(np.arange(64))
    assert model.score(batch).is_cuda
    loaded = seqrec.load(model.save(tmp_path / "run"), device="cpu")
    assert torch.allclose(model.score(batch).cpu(), loaded.score(batch), atol=1e-3, rtol=1e-3)
    on_cpu = seqrec.evaluate(loaded, test, k=(1, 10))["metrics"]
    assert on_cpu == pytest.approx(on_gpu, abs=2e-3)
    sampled = [seqrec.evaluate(m, test, protocol="sampled", k=(10,))["metrics"] for m in (model, loaded)]
    assert sampled[0] == pytest.approx(sampled[1], abs=2e-3)
    top = [m.recommend([[1, 2, 3], [20, 21]], k=5) for m in (model, loaded)]  # top-k taken on the GPU
    assert np.array_equal(top[0][0], top[1][0]) and np.allclose(top[0][1], top[1][1], atol=1e-3)
