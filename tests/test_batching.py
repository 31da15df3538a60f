"""The training batchers of the data layer, on their own (no model, no network)."""

import numpy as np
import pytest
import torch

import seqrec
from seqrec.data.batching import ClozeBatcher, NextItemBatcher, SessionParallelBatcher
from seqrec.ids import PAD, mask_id

from conftest import cyclic_frame


@pytest.fixture(scope="module")
def train():
    return seqrec.leave_one_out(seqrec.read_interactions(cyclic_frame(n_users=200, length=14, min_length=3))).train


def epoch(batcher, seed):
    return list(batcher.epoch(torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("bucketing", [False, True])
def test_next_item_batches_cover_every_user_once_and_weigh_every_position_alike(train, bucketing):
    batcher = NextItemBatcher(train, max_len=10, batch_size=16, bucketing=bucketing)
    batches = epoch(batcher, 0)
    trainable = int((train.lengths >= 2).sum())  # a user needs an input and a target
    assert 0 < trainable < train.n_users
    assert len(batches) == len(batcher) and sum(b.n_sequences for b in batches) == trainable
    for b in batches:
        assert torch.equal(b.inputs, b.window[:, :-1]) and torch.equal(b.targets, b.window[:, 1:])
        assert (b.targets[b.mask] != PAD).all() and (b.window[:, -1] != PAD).all()  # left padding
        assert b.window.shape[1] == int((b.window != PAD).sum(1).max())  # trimmed to the longest window
    positions = sum(b.n_positions for b in batches)
    assert positions == int((np.minimum(train.lengths, 11) - 1).clip(min=0).sum())
    if bucketing:  # each batch's weight is its share of the positions over the mean batch's
        assert sum(b.weight for b in batches) == pytest.approx(len(batches))
        assert all(b.weight == pytest.approx(b.n_positions * len(batches) / positions) for b in batches)
    else:
        assert all(b.weight == 1.0 for b in batches)
    again = epoch(batcher, 0)  # the generator is the only source of randomness
    assert all(torch.equal(a.window, b.window) for a, b in zip(batches, again))
    assert not all(torch.equal(a.window, b.window) for a, b in zip(batches, epoch(batcher, 1)))


def test_cloze_batches_mask_real_positions_and_target_them(train):
    batcher = ClozeBatcher(train, max_len=10, batch_size=32, mask_prob=0.3)
    for b in epoch(batcher, 0):
        assert not b.chosen[b.window == PAD].any() and (b.chosen.sum(1) >= 1).all()
        assert (b.inputs[b.chosen] == mask_id(train.n_items)).all()  # mask_token_share 1: always [mask]
        assert torch.equal(b.inputs[~b.chosen], b.window[~b.chosen])
        assert b.n_positions == int(b.chosen.sum())
    masks = [torch.cat([b.chosen.flatten() for b in epoch(batcher, seed)]) for seed in (0, 0, 1)]
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])  # a fresh mask per seed


def test_session_parallel_batches_predict_the_next_event_of_the_same_session(train):
    batcher = SessionParallelBatcher(train, batch_size=8)
    batches = epoch(batcher, 0)
    session_of = np.repeat(np.arange(train.n_users), train.lengths)
    assert [b.first for b in batches] == [True] + [False] * (len(batches) - 1)
    assert batches[0].reset.all()
    pairs = 0
    for b in batches:
        positions = b.positions.numpy()
        assert (session_of[positions + 1] == session_of[positions]).all()
        assert torch.equal(b.inputs, torch.from_numpy(train.items[positions]))
        assert torch.equal(b.targets, torch.from_numpy(train.items[positions + 1]))
        pairs += b.n_positions
    assert pairs == int((train.lengths[train.lengths >= 2] - 1).sum())  # every (input, next) pair once
