"""The estimators users touch: ``fit`` / ``recommend`` / ``save`` / ``load``.

Contract (scikit-learn's): ``__init__`` only stores parameters; ``fit`` returns ``self`` and starts
fresh; fitted state lives in ``vocab_``, ``net_``, ``histories_``, ``train_result_``; methods that need
it raise :class:`~seqrec.errors.NotFittedError` before ``fit``.
This is the only layer that knows data, networks, losses and evaluation together.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from seqrec import losses, samplers
from seqrec.data.interactions import Interactions, read_interactions
from seqrec.data.sequences import ranges, session_parallel, windows
from seqrec.data.splits import EvalSet
from seqrec.data.vocab import Vocab
from seqrec.errors import ConfigError, DataError, NotFittedError, choose
from seqrec.ids import FIRST_ITEM, PAD, mask_id
from seqrec.nn.bert4rec import HEADS, NORMS, BERT4RecNet
from seqrec.nn.gru4rec import GRU4RecNet
from seqrec.nn.sasrec import SASRecNet
from seqrec.optim import OPTIMIZERS, make_optimizer
from seqrec.train import TrainResult, train_loop
from seqrec.version import __version__

log = logging.getLogger(__name__)
DEVICES = ("cpu", "cuda")
_SCORE_BATCH = 1024
_BUCKET_BATCHES = 32
BATCHINGS = ("session", "padded")


class SequentialRecommender:
    """Shared machinery of next-item models that read left-padded windows of the last ``max_len`` items."""

    name = ""
    max_len: int
    device: str

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in inspect.signature(type(self).__init__).parameters if p != "self"}

    def describe(self) -> dict:
        return {"name": self.name, **{k: v for k, v in self.get_params().items() if k != "progress"}}

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, train, valid: EvalSet | None = None) -> "SequentialRecommender":
        """Train on ``train`` (Interactions, DataFrame or path); early-stop on ``valid`` if given."""
        if not isinstance(train, Interactions):
            train = read_interactions(train)
        if valid is not None and valid.log.n_items != train.n_items:
            raise DataError("the validation set was built from other data than the training set")
        choose("device", self.device.split(":")[0], DEVICES)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available; use --device cpu")
        self.vocab_, self.histories_ = train.vocab, train
        generator = torch.Generator().manual_seed(self.seed)
        fork = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=fork):  # init and dropout are seeded; caller's RNG untouched
            torch.manual_seed(self.seed)
            self.net_ = self._build_net(train.n_items).to(self.device)
            batches, n_batches, step_loss = self._training(train, generator)
            validate = None
            if valid is not None and len(valid):
                from seqrec.evaluate import evaluate

                validate = lambda: evaluate(self, valid, k=(10,))["metrics"]  # noqa: E731
            self.train_result_ = train_loop(self.net_, batches, n_batches, step_loss, validate,
                                            epochs=self.epochs, patience=self.patience, lr=self.lr,
                                            generator=generator, progress=self.progress,
                                            optimizer=self._make_optimizer())
        return self

    def set_histories(self, log: Interactions) -> "SequentialRecommender":
        """Use ``log`` (same vocabulary) as the known users' histories for :meth:`recommend_users`."""
        self._check_fitted()
        if log.n_items != self.vocab_.n_items or not np.array_equal(log.vocab.items, self.vocab_.items):
            raise DataError("histories must use the model's item vocabulary")
        self.histories_, self.vocab_ = log, log.vocab
        return self

    # ---- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def score_windows(self, item_windows: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [R, N] (float32, CPU) of every real item after each left-padded window [R, max_len].

        ``out`` (a float32 CPU tensor [R, N]) receives the scores when given, saving an allocation.
        """
        self._check_fitted()
        self.net_.eval()
        x = torch.from_numpy(np.ascontiguousarray(item_windows))
        width = int((x != PAD).sum(1).max()) if len(x) else 1
        x = x[:, x.shape[1] - max(width, 1):].to(self.device)  # trim common left padding
        if self.device == "cpu":
            return self._score_last(x, out)
        scores = self._score_last(x).float().cpu()
        return scores if out is None else out.copy_(scores)

    def encode_histories(self, histories) -> tuple[list[np.ndarray], list]:
        """Internal-id histories for lists of external item ids, and the unknown ids that were dropped."""
        self._check_fitted()
        histories = [list(h) for h in histories]
        flat = [item for h in histories for item in h]
        codes = self.vocab_.encode_items(flat) if flat else np.zeros(0, dtype=np.int64)
        unknown = [item for item, code in zip(flat, codes) if code == PAD]
        bounds = np.cumsum([0] + [len(h) for h in histories])
        return [codes[a:b][codes[a:b] != PAD] for a, b in zip(bounds[:-1], bounds[1:])], unknown

    def recommend(self, histories, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (external item ids [n, k], scores [n, k]) for new histories of external item ids.

        Unknown items are ignored and reported in a warning (see :meth:`encode_histories` for the list).
        """
        encoded, unknown = self.encode_histories(histories)
        if unknown:
            log.warning("ignored %d unknown item id(s): %s", len(unknown), unknown[:10])
        lengths = np.array([len(h) for h in encoded], dtype=np.int64)
        flat = np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        ids, scores = self._top_k(flat, starts, starts + lengths, k, exclude_seen)
        return self.vocab_.decode_items(ids), scores

    def recommend_users(self, users="all", k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` for known users from their stored histories: columns user_id, rank, item_id, score."""
        self._check_fitted()
        if isinstance(users, str) and users == "all":
            index = np.arange(self.vocab_.n_users)
        else:
            index = self.vocab_.encode_users(list(users))
            if (index < 0).any():
                bad = [u for u, i in zip(users, index) if i < 0]
                raise DataError(f"{len(bad)} unknown user id(s): {bad[:10]}")
        offsets = self.histories_.offsets
        ids, scores = self._top_k(self.histories_.items, offsets[index], offsets[index + 1], k, exclude_seen)
        frame = pd.DataFrame({
            "user_id": np.repeat(self.vocab_.users[index], ids.shape[1]),
            "rank": np.tile(np.arange(1, ids.shape[1] + 1), len(index)),
            "item_id": self.vocab_.decode_items(ids.reshape(-1)),
            "score": scores.reshape(-1),
        })
        return frame[np.isfinite(frame["score"].to_numpy())].reset_index(drop=True)

    def _top_k(self, items, starts, ends, k, exclude_seen) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and scores [R, k] of the best items after each history items[starts:ends]."""
        self._check_fitted()
        k = min(int(k), self.vocab_.n_items)
        if k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        out_ids, out_scores = [], []
        for s in range(0, len(starts), _SCORE_BATCH):
            st, en = starts[s:s + _SCORE_BATCH], ends[s:s + _SCORE_BATCH]
            scores = self.score_windows(windows(items, st, en, self.max_len))
            if exclude_seen:
                rows, seen = np.repeat(np.arange(len(st)), en - st), items[ranges(st, en - st)]
                scores[torch.from_numpy(rows), torch.from_numpy(seen - FIRST_ITEM)] = float("-inf")
            top = torch.topk(scores, k, dim=1)
            out_ids.append(top.indices.numpy() + FIRST_ITEM)
            out_scores.append(top.values.numpy())
        if not out_ids:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate(out_ids), np.concatenate(out_scores)

    # ---- training helpers ----------------------------------------------------------------------
    def _window_batches(self, all_windows: torch.Tensor, real: torch.Tensor):
        """``batches(generator)`` over rows of left-padded ``all_windows`` [U, W] (``real`` [U] non-padding
        counts), each batch trimmed to its longest window; and the number of batches per epoch.

        Random batches; with ``self.bucketing``, every shuffled group of 32 batches' worth of rows is sorted
        by length and the batch order shuffled, so a batch carries little padding.
        """
        n_batches = -(-len(all_windows) // self.batch_size)

        def batches(gen):
            order = torch.randperm(len(all_windows), generator=gen)
            if getattr(self, "bucketing", False):
                group = self.batch_size * _BUCKET_BATCHES
                order = torch.cat([part[torch.argsort(real[part], stable=True)] for part in order.split(group)])
                starts = torch.randperm(n_batches, generator=gen) * self.batch_size
            else:
                starts = torch.arange(n_batches) * self.batch_size
            for s in starts.tolist():
                rows = order[s:s + self.batch_size]
                width = int(real[rows].max())
                yield len(rows), all_windows[rows, all_windows.shape[1] - width:]  # trimmed

        return batches, n_batches

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write config.json, vocabulary, weights (safetensors), histories and training history."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"model": self.name, "params": self.get_params(), "n_items": self.vocab_.n_items,
                  "seqrec_version": __version__}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        self.vocab_.save(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(state, str(directory / "weights.safetensors"))
        h = self.histories_
        np.savez(directory / "histories.npz", offsets=h.offsets, items=h.items, times=h.times)
        if getattr(self, "train_result_", None) is not None:
            (directory / "history.json").write_text(json.dumps(self.train_result_.to_dict(), indent=2) + "\n")
        return directory

    @classmethod
    def _load(cls, directory: Path, config: dict, device: str | None) -> "SequentialRecommender":
        params = dict(config["params"])
        if device is None and params.get("device", "cpu").startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # a model trained on a GPU still loads on a CPU-only machine
        if device is not None:
            params["device"] = device
        model = cls(**params)
        model.vocab_ = Vocab.load(directory)
        with np.load(directory / "histories.npz", allow_pickle=False) as data:
            model.histories_ = Interactions(model.vocab_, data["offsets"], data["items"], data["times"],
                                            source=str(directory / "histories.npz"))
        model.net_ = model._build_net(model.vocab_.n_items)
        model.net_.load_state_dict(load_file(str(directory / "weights.safetensors"), device="cpu"))
        model.net_.to(model.device).eval()
        history = directory / "history.json"
        if history.is_file():
            data = json.loads(history.read_text())
            model.train_result_ = TrainResult([], data["best_epoch"], data["best_metric"])
        return model

    def _check_fitted(self) -> None:
        if getattr(self, "net_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or seqrec.load() first")

    # ---- hooks for each model ------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer | None:
        return None  # the training loop's default: fused Adam

    def _build_net(self, n_items: int) -> torch.nn.Module:
        raise NotImplementedError

    def _training(self, train: Interactions, generator: torch.Generator):
        raise NotImplementedError

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [R, N] of every real item after the last position of each window x [R, L]."""
        raise NotImplementedError


class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley, ICDM 2018) trained on all positions of each user's sequence.

    Network: :class:`seqrec.nn.sasrec.SASRecNet` (see its docstring for fidelity notes).
    Training follows the reference: each user's last ``max_len + 1`` training items give ``max_len``
    (input, next-item) pairs; every non-padding position is a training target. Losses:
    ``bce`` (one uniform negative per position, not in the user's window: the reference excludes the
    user's whole training set, we exclude the ``max_len + 1`` items of the window), ``ce`` (full softmax),
    ``sampled_ce`` (``n_negatives`` uniform negatives shared by a sequence's positions; a negative equal to
    the position's target is dropped from that position's softmax). Adam with betas (0.9, 0.98) as the
    reference. ``bucketing=True`` (off by default) shuffles the users every epoch, sorts each group of 32
    batches' worth by length and shuffles the batch order, so a batch carries little padding: faster
    (MovieLens-100K, max_len 200: 2.3 s instead of 4.7 s an epoch). Each batch's loss is then weighted by
    its share of the epoch's positions, so that every position weighs the same as with random batches;
    without that weighting, bucketing cost 11 % test NDCG@10 on Amazon Beauty (S3-Rec file, 0.0487 vs
    0.0548) and 19 % on MovieLens-100K (0.0899 vs 0.1114). ``bf16=True`` runs the network under CPU/CUDA
    bf16 autocast and the CE matrix products in bf16.
    Defaults follow the paper (dim 64, 2 blocks, 1 head, lr 1e-3, batch 128; max_len 50 suits Amazon
    data, use 200 for MovieLens); dropout 0.2 is the paper's ML-1M value (it used 0.5 on sparse Amazon data).
    """

    name = "sasrec"

    def __init__(self, loss: str = "ce", max_len: int = 50, dim: int = 64, n_heads: int = 1, n_blocks: int = 2,
                 dropout: float = 0.2, attn_dropout: float | None = None, n_negatives: int = 256, lr: float = 1e-3,
                 batch_size: int = 128, bucketing: bool = False, epochs: int = 200, patience: int = 10,
                 seed: int = 0, device: str = "cpu", bf16: bool = False, progress: bool = True):
        self.loss, self.max_len, self.dim, self.n_heads, self.n_blocks = loss, max_len, dim, n_heads, n_blocks
        self.dropout, self.attn_dropout, self.n_negatives = dropout, attn_dropout, n_negatives
        self.lr, self.batch_size, self.bucketing = lr, batch_size, bucketing
        self.epochs, self.patience, self.seed, self.device = epochs, patience, seed, device
        self.bf16, self.progress = bf16, progress

    def _build_net(self, n_items: int) -> SASRecNet:
        losses.check_loss(self.loss)
        return SASRecNet(n_items, self.max_len, self.dim, self.n_heads, self.n_blocks, self.dropout,
                         self.attn_dropout)

    def _autocast(self):
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16)

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        with self._autocast():
            hidden = self.net_(x)[:, -1]  # [R, D]
        return self.net_.score(hidden.float(), out=out)

    def _training(self, train: Interactions, generator: torch.Generator):
        lengths = train.lengths
        users = np.flatnonzero(lengths >= 2)
        if len(users) == 0:
            raise DataError(f"{train.source}: no user has 2 training events; nothing to learn from")
        starts = train.offsets[users]
        all_windows = torch.from_numpy(windows(train.items, starts, starts + lengths[users], self.max_len + 1))
        real = torch.from_numpy(np.minimum(lengths[users], self.max_len + 1))  # [U] non-padding per window
        batches, n_batches = self._window_batches(all_windows, real)
        net, n_items, dtype = self.net_, train.n_items, torch.bfloat16 if self.bf16 else torch.float32

        # With bucketing, batches differ a lot in their number of positions; weighting each batch's mean by
        # its share of positions keeps every position's weight equal, as with random batches.
        positions_per_batch = float((real - 1).clamp(min=0).sum()) / n_batches

        def step_loss(window: torch.Tensor) -> torch.Tensor:
            inputs, targets = window[:, :-1], window[:, 1:]  # [B, T]
            mask = inputs != PAD  # a target is real wherever its input is
            weight = float(mask.sum()) / positions_per_batch if self.bucketing else 1.0
            return weight * position_loss(inputs, targets, mask, window)

        def position_loss(inputs, targets, mask, window) -> torch.Tensor:
            with self._autocast():
                hidden = net(inputs.to(self.device))
            hidden, mask, targets = hidden.float(), mask.to(self.device), targets.to(self.device)
            if self.loss == "ce":
                return losses.ce(hidden[mask], net.item_weights(), targets[mask] - FIRST_ITEM, dtype)
            table = net.item_emb.weight
            positive = (hidden * table[targets]).sum(-1)  # [B, T]
            if self.loss == "bce":
                negatives = samplers.uniform_items(n_items, tuple(inputs.shape), generator, exclude=window)
                negative = (hidden * table[negatives.to(self.device)]).sum(-1)
                return losses.bce(positive[mask], negative[mask])
            negatives = samplers.uniform_items(n_items, (len(inputs), self.n_negatives), generator).to(self.device)
            negative = torch.bmm(hidden, table[negatives].transpose(1, 2))  # [B, T, K]
            clash = negatives[:, None, :] == targets[:, :, None]  # [B, T, K]
            return losses.sampled_ce(positive[mask], negative[mask], clash[mask])

        return batches, n_batches, step_loss


class BERT4Rec(SequentialRecommender):
    """BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained to fill in masked items.

    Network: :class:`seqrec.nn.bert4rec.BERT4RecNet` (see its docstring for fidelity notes).

    Training (the reference's ``gen_data_fin.py`` + ``run.py``): each user's last ``max_len`` training items
    form one window; every epoch, each window gets a fresh random mask of exactly
    ``max(1, round(length * mask_prob))`` positions (the reference's ``masked_lm_prob``; it always
    replaces a chosen item by ``[mask]``, its ``mask_prob=1.0``), and the loss is taken over the masked
    positions only: ``ce`` (full softmax over the catalogue, the paper's), ``sampled_ce`` (``n_negatives``
    uniform negatives shared by a window's positions) or ``bce`` (one uniform negative per position).
    The paper's ρ: 0.2 for MovieLens-1M, 0.4 for Steam, 0.6 for Beauty (``mask_prob`` defaults to 0.2).
    ``last_mask_prob``: the fraction of windows in which *only the last item* is masked instead, which
    trains exactly the inference task (appended ``[mask]``); later reproductions use it to close the
    train/inference gap (the reference's data generator adds such windows too). Default 0.
    Inference appends ``[mask]`` to the history (dropping the oldest item at ``max_len``) and scores the
    items at that position.

    Deviations from the reference, each deliberate: dynamic masking every epoch instead of 10 fixed
    copies (``dupe_factor``) of each window and no extra sliding windows over long histories (each user
    contributes its last ``max_len`` items, as SASRec's training here); Adam with lr 1e-3 and betas
    (0.9, 0.98) and no weight decay, warm-up or decay (the reference: AdamW lr 1e-4, 400k steps), with
    early stopping on validation NDCG@10 instead of a fixed step budget. The RecSys 2022 replicability
    study (Petrov & Macdonald) found that BERT4Rec needs far more training than its defaults, so
    ``epochs`` defaults to 400 with ``patience`` 20; history.json records each epoch's time.
    ``bucketing`` batches windows of similar length (see :class:`SASRec`), each batch's loss weighted by its
    share of the epoch's masked positions.
    """

    name = "bert4rec"

    def __init__(self, loss: str = "ce", max_len: int = 50, dim: int = 64, n_heads: int = 2, n_blocks: int = 2,
                 dropout: float = 0.2, attn_dropout: float | None = None, head: str = "paper", norm: str = "post",
                 mask_prob: float = 0.2, last_mask_prob: float = 0.0, n_negatives: int = 256, lr: float = 1e-3,
                 batch_size: int = 128, bucketing: bool = False, epochs: int = 400, patience: int = 20,
                 seed: int = 0, device: str = "cpu", bf16: bool = False, progress: bool = True):
        self.loss, self.max_len, self.dim, self.n_heads, self.n_blocks = loss, max_len, dim, n_heads, n_blocks
        self.dropout, self.attn_dropout, self.head, self.norm = dropout, attn_dropout, head, norm
        self.mask_prob, self.last_mask_prob, self.n_negatives = mask_prob, last_mask_prob, n_negatives
        self.lr, self.batch_size, self.bucketing = lr, batch_size, bucketing
        self.epochs, self.patience, self.seed, self.device = epochs, patience, seed, device
        self.bf16, self.progress = bf16, progress

    def _build_net(self, n_items: int) -> BERT4RecNet:
        losses.check_loss(self.loss)
        choose("head", self.head, HEADS)
        choose("norm", self.norm, NORMS)
        if not 0.0 < self.mask_prob <= 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1], got {self.mask_prob}")
        if not 0.0 <= self.last_mask_prob <= 1.0:
            raise ConfigError(f"last_mask_prob must be in [0, 1], got {self.last_mask_prob}")
        return BERT4RecNet(n_items, self.max_len, self.dim, self.n_heads, self.n_blocks, self.dropout,
                           self.attn_dropout, self.head, self.norm)

    _autocast = SASRec._autocast

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        masked = torch.full((len(x), 1), mask_id(self.net_.n_items), dtype=x.dtype, device=x.device)
        x = torch.cat([x, masked], dim=1)[:, -self.max_len:]  # append [mask]; drop the oldest at max_len
        with self._autocast():
            hidden = self.net_(x)[:, -1]
        return self.net_.score(hidden.float(), out=out)

    def mask(self, window: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Boolean [B, L]: the positions of left-padded ``window`` to replace by ``[mask]`` this time."""
        real = window != PAD
        n_real = real.sum(1)
        n_mask = torch.clamp(torch.round(n_real * self.mask_prob), min=1).to(torch.int64)  # as BERT's generator
        keys = torch.rand(window.shape, generator=generator).masked_fill_(~real, 2.0)
        chosen = keys.argsort(1).argsort(1) < n_mask[:, None]  # the n_mask real positions of lowest key
        if self.last_mask_prob > 0:
            last = torch.rand(len(window), generator=generator) < self.last_mask_prob
            chosen[last] = False
            chosen[last, -1] = True  # left padding: the last column is always a real item
        return chosen

    def _training(self, train: Interactions, generator: torch.Generator):
        lengths = train.lengths
        users = np.flatnonzero(lengths >= 1)
        if len(users) == 0:
            raise DataError(f"{train.source}: no user has a training event; nothing to learn from")
        starts = train.offsets[users]
        all_windows = torch.from_numpy(windows(train.items, starts, starts + lengths[users], self.max_len))
        real = torch.from_numpy(np.minimum(lengths[users], self.max_len))
        batches, n_batches = self._window_batches(all_windows, real)
        net, n_items = self.net_, train.n_items
        dtype, mask_token = torch.bfloat16 if self.bf16 else torch.float32, mask_id(n_items)
        expected = torch.clamp(torch.round(real * self.mask_prob), min=1)
        expected = (1 - self.last_mask_prob) * expected + self.last_mask_prob
        masked_per_batch = float(expected.sum()) / n_batches

        def step_loss(window: torch.Tensor) -> torch.Tensor:
            chosen = self.mask(window, generator)
            inputs = window.masked_fill(chosen, mask_token).to(self.device)
            with self._autocast():
                hidden = net(inputs)
            chosen = chosen.to(self.device)
            hidden = net.project(hidden.float()[chosen])  # [M, D] at masked positions only
            targets = window.to(self.device)[chosen]  # [M] internal ids
            weight = float(chosen.sum()) / masked_per_batch if self.bucketing else 1.0
            bias = net.item_bias()
            if self.loss == "ce":
                return weight * losses.ce(hidden, net.item_weights(), targets - FIRST_ITEM, dtype, bias=bias)

            def logits(h, items):  # h [M, D] or [M, K, D]-broadcastable; items internal ids
                out = (h * net.item_emb.weight[items]).sum(-1)
                return out if bias is None else out + bias[items - FIRST_ITEM]

            positive = logits(hidden, targets)
            if self.loss == "bce":
                negatives = samplers.uniform_items(n_items, tuple(window.shape), generator, exclude=window)
                negative = logits(hidden, negatives.to(self.device)[chosen])
                return weight * losses.bce(positive, negative)
            negatives = samplers.uniform_items(n_items, (len(window), self.n_negatives), generator).to(self.device)
            rows = chosen.nonzero()[:, 0]  # window of each masked position
            negative = torch.bmm(hidden[:, None, :], net.item_emb.weight[negatives[rows]].transpose(1, 2))[:, 0]
            if bias is not None:
                negative = negative + bias[negatives[rows] - FIRST_ITEM]
            clash = negatives[rows] == targets[:, None]
            return weight * losses.sampled_ce(positive, negative, clash)

        return batches, n_batches, step_loss


def right_align(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids [R, L] -> (the same rows right-padded, their lengths [R])."""
    lengths = (x != PAD).sum(1)
    width = x.shape[1]
    index = (torch.arange(width, device=x.device)[None, :] + (width - lengths)[:, None]) % width
    return x.gather(1, index), lengths


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018), after the official PyTorch code.

    Network: :class:`seqrec.nn.gru4rec.GRU4RecNet`. Defaults are the official code's (one layer of 100,
    constrained embedding, cross-entropy, batch 64, 2048 extra negatives with alpha 0.5, Adagrad with
    momentum at lr 0.05, 10 epochs); tuned values per dataset are in its ``paramfiles`` (e.g. Diginetica
    BPR-max: dim 512, batch 128, dropouts 0.5 / 0.3, momentum 0.15, alpha 0.3, bpreg 0.9, elu 1).

    ``batching="session"`` (default): session-parallel mini-batches (:func:`seqrec.data.sequences.session_parallel`):
    each "user" of the training log is a session, sessions run in order of their first timestamp, a slot's
    hidden state is reset exactly when its session ends and the next one starts, gradients are truncated
    after one step (as the official code). Per step, the candidates are the slots' targets plus
    ``n_negatives`` items shared by the mini-batch, drawn ∝ popularity^``sample_alpha`` **before**
    scoring; row i's positive is column i, every other column is a negative (other slots' targets
    included). ``batching="padded"``: every position of the last ``max_len + 1`` events of each user,
    like SASRec (for leave-one-out data); the candidates are each position's target plus the
    ``n_negatives`` shared sampled items (the other positions' targets are not used: a batch holds
    thousands of positions), or, for ``loss="ce"`` with ``n_negatives=0``, the whole catalogue.

    Losses (softmax applied once, to raw scores): ``ce`` (with logQ correction ``logq`` > 0:
    scores minus ``logq · log`` of each candidate's sampling weight, popularity for in-batch targets and
    popularity^alpha for sampled items, as the official code), ``bpr_max`` (with ``bpreg`` score
    regularisation; scores pass through ELU(``elu``) first when ``elu`` > 0, the official final
    activation) and ``top1_max``. The loss of a step is its mean over the full ``batch_size`` slots
    (the official sum / batch_size). Optimiser: ``adagrad_m`` (the official Adagrad with momentum,
    sparse row updates for the item tables) or ``adam``.
    Scoring reads the last ``max_len`` events of a history (a session longer than that is truncated).
    """

    name = "gru4rec"
    LOSSES = losses.SESSION_LOSSES

    def __init__(self, loss: str = "ce", batching: str = "session", dim: int = 100, n_layers: int = 1,
                 embedding: int = 0, dropout_embed: float = 0.0, dropout_hidden: float = 0.0,
                 n_negatives: int = 2048, sample_alpha: float = 0.5, logq: float = 0.0, bpreg: float = 1.0,
                 elu: float = 0.5, optimizer: str = "adagrad_m", lr: float = 0.05, momentum: float = 0.0,
                 batch_size: int = 64, max_len: int = 50, epochs: int = 10, patience: int = 3, seed: int = 0,
                 device: str = "cpu", progress: bool = True):
        self.loss, self.batching, self.dim, self.n_layers, self.embedding = loss, batching, dim, n_layers, embedding
        self.dropout_embed, self.dropout_hidden = dropout_embed, dropout_hidden
        self.n_negatives, self.sample_alpha, self.logq, self.bpreg, self.elu = \
            n_negatives, sample_alpha, logq, bpreg, elu
        self.optimizer, self.lr, self.momentum, self.batch_size, self.max_len = optimizer, lr, momentum, batch_size, max_len
        self.epochs, self.patience, self.seed, self.device, self.progress = epochs, patience, seed, device, progress

    def _build_net(self, n_items: int) -> GRU4RecNet:
        losses.check_loss(self.loss, self.LOSSES)
        choose("batching", self.batching, BATCHINGS)
        choose("optimizer", self.optimizer, OPTIMIZERS)
        if self.n_negatives == 0 and (self.loss != "ce" or self.batching == "session"):
            raise ConfigError("n_negatives=0 (full softmax) needs loss='ce' and batching='padded'")
        if self.n_negatives < 0:
            raise ConfigError(f"n_negatives must be >= 0, got {self.n_negatives}")
        return GRU4RecNet(n_items, self.dim, self.n_layers, self.embedding, self.dropout_embed, self.dropout_hidden)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, self.net_.parameters(), self.lr, self.momentum)

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        right, lengths = right_align(x)
        outputs = self.net_(right)  # [R, T, H]
        last = outputs[torch.arange(len(x), device=x.device), (lengths - 1).clamp(min=0)]
        last = last * (lengths > 0)[:, None]  # an empty history keeps the zero initial state
        return self.net_.score(last, out=out)

    def _sampled_loss(self, pos: torch.Tensor, neg: torch.Tensor, ignore: torch.Tensor,
                      pos_weight: torch.Tensor | None, neg_weight: torch.Tensor | None) -> torch.Tensor:
        """The configured loss of positives [M] against candidate scores [M, C] (``ignore`` [M, C])."""
        if self.loss == "ce":
            if self.logq > 0:  # logQ correction: subtract the log of each candidate's sampling weight
                pos = pos - self.logq * torch.log(pos_weight)
                neg = neg - self.logq * torch.log(neg_weight)
            return losses.sampled_ce(pos, neg, ignore)
        if self.loss == "bpr_max":
            if self.elu > 0:
                pos, neg = F.elu(pos, self.elu), F.elu(neg, self.elu)
            return losses.bpr_max(pos, neg, ignore, self.bpreg)
        return losses.top1_max(pos, neg, ignore)

    def _training(self, train: Interactions, generator: torch.Generator):
        counts = torch.from_numpy(np.bincount(train.items - FIRST_ITEM, minlength=train.n_items))
        sampler = samplers.PopularitySampler(counts, self.sample_alpha) if self.n_negatives else None
        popularity = counts.float().clamp(min=1).to(self.device)  # logQ weights of in-batch targets
        sample_weight = popularity ** self.sample_alpha
        sparse = self.optimizer == "adagrad_m"  # row-wise updates of the item tables, as the official code
        if self.batching == "session":
            return self._session_training(train, generator, sampler, popularity, sample_weight, sparse)
        return self._padded_training(train, generator, sampler, popularity, sample_weight, sparse)

    def _session_training(self, train, generator, sampler, popularity, sample_weight, sparse):
        lengths = train.lengths
        sessions = np.flatnonzero(lengths >= 2)
        if len(sessions) == 0:
            raise DataError(f"{train.source}: no session has 2 training events; nothing to learn from")
        start_times = np.asarray(train.times)[train.offsets[sessions]]
        order = sessions[np.lexsort((sessions, start_times))]  # by first timestamp, as the official code
        items = torch.from_numpy(train.items)
        net, state = self.net_, {}
        n_steps = int((lengths[sessions] - 1).sum())
        n_batches = -(-n_steps // min(self.batch_size, len(sessions)))  # about: slots retire at the end

        def batches(gen):
            state["h"] = None
            for positions, reset, keep in session_parallel(train.offsets, order, self.batch_size):
                yield len(positions), (torch.from_numpy(positions), torch.from_numpy(reset),
                                       None if keep is None else torch.from_numpy(keep))

        def step_loss(batch) -> torch.Tensor:
            positions = batch[0]
            hidden, state["h"] = self._advance(state["h"], batch, items, sparse)
            targets = items[positions + 1].to(self.device)
            m = len(targets)
            if sampler is not None:  # negatives drawn before any score is computed
                extra = sampler.sample(self.n_negatives, generator).to(self.device)
                columns = torch.cat([targets, extra])
            else:
                columns = targets
            weights, bias = net.candidates(columns, sparse)
            scores = torch.addmm(bias, hidden, weights.T)  # [M, M + K]
            diagonal = torch.arange(m, device=self.device)
            ignore = torch.zeros(scores.shape, dtype=torch.bool, device=self.device)
            ignore[diagonal, diagonal] = True  # row i's positive is column i
            column_weight = None
            if self.loss == "ce" and self.logq > 0:
                column_weight = torch.cat([popularity[targets - FIRST_ITEM],
                                           sample_weight[columns[m:] - FIRST_ITEM]])[None, :]
            loss = self._sampled_loss(scores[diagonal, diagonal], scores, ignore,
                                      None if column_weight is None else column_weight[0, :m], column_weight)
            return loss * (m / self.batch_size)

        return batches, n_batches, step_loss

    def _advance(self, h: list[torch.Tensor] | None, batch, items: torch.Tensor, sparse: bool = False):
        """One session-parallel step: (outputs [b, H], new per-layer states) from the previous states ``h``
        (None at the start of an epoch) and ``batch = (positions, reset, keep)`` of
        :func:`~seqrec.data.sequences.session_parallel`. Retired slots are dropped, and a slot whose session
        starts here gets an exact zero state; gradients stop at the step boundary (as the official code)."""
        positions, reset, keep = batch
        if h is None:
            h = self.net_.initial_state(len(positions), self.device)
        if keep is not None:  # slots retired: no session left to fill them
            h = [layer[keep.to(self.device)] for layer in h]
        reset = reset.to(self.device)[:, None]
        h = [layer.detach().masked_fill(reset, 0.0) for layer in h]
        return self.net_.step(items[positions].to(self.device), h, sparse)

    def _padded_training(self, train, generator, sampler, popularity, sample_weight, sparse):
        lengths = train.lengths
        users = np.flatnonzero(lengths >= 2)
        if len(users) == 0:
            raise DataError(f"{train.source}: no user has 2 training events; nothing to learn from")
        starts = train.offsets[users]
        all_windows = torch.from_numpy(windows(train.items, starts, starts + lengths[users], self.max_len + 1))
        real = torch.from_numpy(np.minimum(lengths[users], self.max_len + 1))
        batches, n_batches = self._window_batches(all_windows, real)
        net = self.net_

        def step_loss(window: torch.Tensor) -> torch.Tensor:
            right, _ = right_align(window.to(self.device))
            inputs, targets = right[:, :-1], right[:, 1:]
            mask = targets != PAD
            hidden = net(inputs, sparse)[mask]  # [M, H]
            targets = targets[mask]
            if sampler is None:  # full softmax over the catalogue
                return losses.ce(hidden, net.item_weights(), targets - FIRST_ITEM, bias=net.item_bias())
            pos_w, pos_b = net.candidates(targets, sparse)
            pos = (hidden * pos_w).sum(1) + pos_b
            extra = sampler.sample(self.n_negatives, generator).to(self.device)
            neg_w, neg_b = net.candidates(extra, sparse)
            neg = torch.addmm(neg_b, hidden, neg_w.T)  # [M, K]
            clash = extra[None, :] == targets[:, None]
            return self._sampled_loss(pos, neg, clash, popularity[targets - FIRST_ITEM],
                                      sample_weight[extra - FIRST_ITEM][None, :])

        return batches, n_batches, step_loss


class GRU4RecPlus(GRU4Rec):
    """"GRU4Rec+": GRU4Rec with BPR-max and 2048 extra popularity-sampled negatives (Hidasi & Karatzoglou,
    CIKM 2018). Defaults are the official best Diginetica BPR-max parameters
    (``paramfiles/diginetica_bprmax_shared_best.py``) except ``dim`` (512 there; 100 here, the official
    class default, to keep CPU training short: pass ``dim=512`` for the tuned size)."""

    name = "gru4rec+"

    def __init__(self, loss: str = "bpr_max", batching: str = "session", dim: int = 100, n_layers: int = 1,
                 embedding: int = 0, dropout_embed: float = 0.5, dropout_hidden: float = 0.3,
                 n_negatives: int = 2048, sample_alpha: float = 0.3, logq: float = 0.0, bpreg: float = 0.9,
                 elu: float = 1.0, optimizer: str = "adagrad_m", lr: float = 0.05, momentum: float = 0.15,
                 batch_size: int = 128, max_len: int = 50, epochs: int = 10, patience: int = 3, seed: int = 0,
                 device: str = "cpu", progress: bool = True):
        super().__init__(loss, batching, dim, n_layers, embedding, dropout_embed, dropout_hidden, n_negatives,
                         sample_alpha, logq, bpreg, elu, optimizer, lr, momentum, batch_size, max_len, epochs,
                         patience, seed, device, progress)


MODELS = {"sasrec": SASRec, "bert4rec": BERT4Rec, "gru4rec": GRU4Rec, "gru4rec+": GRU4RecPlus}


def load(directory, device: str | None = None) -> SequentialRecommender:
    """Load a model saved by :meth:`SequentialRecommender.save` (no pickled objects are read)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise DataError(f"{directory}: not a run directory (no config.json)")
    config = json.loads(config_path.read_text())
    cls = MODELS[choose("model", config["model"], MODELS)]
    return cls._load(directory, config, device)
