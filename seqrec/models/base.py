"""The estimators users touch: ``fit`` / ``recommend`` / ``save`` / ``load`` — the shared base class.

Contract (scikit-learn's): ``__init__`` only stores parameters; ``fit`` returns ``self`` and starts
fresh; fitted state lives in ``vocab_``, ``net_``, ``histories_``, ``train_result_``; methods that need
it raise :class:`~seqrec.errors.NotFittedError` before ``fit``.
The models layer is the only one that knows data, networks, losses and evaluation together.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from seqrec.data.interactions import Interactions, read_interactions
from seqrec.data.sequences import ranges, windows
from seqrec.data.splits import EvalSet
from seqrec.data.vocab import Vocab
from seqrec.errors import ConfigError, DataError, NotFittedError, choose
from seqrec.ids import FIRST_ITEM, PAD
from seqrec.train import TrainResult, train_loop
from seqrec.version import __version__

log = logging.getLogger(__name__)
DEVICES = ("cpu", "cuda")
_SCORE_BATCH = 1024
_BUCKET_BATCHES = 32


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
    def fit(self, train, valid: EvalSet | None = None, exclude_seen: bool = True) -> "SequentialRecommender":
        """Train on ``train`` (Interactions, DataFrame or path); early-stop on ``valid`` if given, ranked
        with (``exclude_seen=True``) or without the history's items, as the test protocol will be."""
        if not isinstance(train, Interactions):
            train = read_interactions(train)
        if valid is not None and valid.log.n_items != train.n_items:
            raise DataError("the validation set was built from other data than the training set")
        choose("device", self.device.split(":")[0], DEVICES)
        if self.time_budget is not None and not self.time_budget > 0:
            raise ConfigError(f"time_budget must be a positive number of seconds, got {self.time_budget}")
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

                def validate():
                    return evaluate(self, valid, k=(10,), exclude_seen=exclude_seen)["metrics"]
            self.train_result_ = train_loop(self.net_, batches, n_batches, step_loss, validate,
                                            epochs=self.epochs, patience=self.patience, lr=self.lr,
                                            generator=generator, progress=self.progress,
                                            optimizer=self._make_optimizer(), time_budget=self.time_budget)
        return self

    def refit(self, train) -> "SequentialRecommender":
        """A fresh model with these parameters, trained on ``train`` (usually ``split.train_valid``, the
        training data with the validation events added back) for exactly the epochs that validation chose
        for this one (its best epoch), with no validation and no early stopping.

        This is how the BERT4Rec reference measures (its data generator trains on every item but the test
        one), and how a model is deployed after model selection: the validation events are the most recent
        data, so a final model should learn from them too. The returned model's ``refit_of_`` records the
        selection (best epoch, its validation metric, epochs run); ``time_budget`` is not carried over (the
        epoch count is already fixed)."""
        self._check_fitted()
        selected = self.train_result_
        params = {**self.get_params(), "epochs": selected.best_epoch, "time_budget": None}
        model = type(self)(**params).fit(train)
        model.refit_of_ = {"best_epoch": selected.best_epoch, "best_valid_metric": selected.best_metric,
                           "epochs_run": len(selected.history) or None, "stop_reason": selected.stop_reason}
        return model

    def set_histories(self, log: Interactions) -> "SequentialRecommender":
        """Use ``log`` (same vocabulary) as the known users' histories for :meth:`recommend_users`."""
        self._check_fitted()
        if log.n_items != self.vocab_.n_items or not np.array_equal(log.vocab.items, self.vocab_.items):
            raise DataError("histories must use the model's item vocabulary")
        self.histories_, self.vocab_ = log, log.vocab
        return self

    # ---- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def score_windows(self, item_windows: np.ndarray, out: torch.Tensor | None = None,
                      on_device: bool = False) -> torch.Tensor:
        """Scores [R, N] (float32, on the CPU unless ``on_device``) of every real item after each left-padded
        window [R, max_len].

        ``out`` (a float32 CPU tensor [R, N]) receives the scores when given, saving an allocation.
        ``on_device=True`` leaves them on the model's device (a GPU's scores then need no copy to the
        host: evaluation ranks them there).
        """
        self._check_fitted()
        self.net_.eval()
        x = torch.from_numpy(np.ascontiguousarray(item_windows))
        width = int((x != PAD).sum(1).max()) if len(x) else 1
        x = x[:, x.shape[1] - max(width, 1):].to(self.device)  # trim common left padding
        if self.device == "cpu":
            return self._score_last(x, out)
        scores = self._score_last(x).float()
        if on_device:
            return scores
        scores = scores.cpu()
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
            scores = self.score_windows(windows(items, st, en, self.max_len), on_device=True)  # top-k there
            if exclude_seen:
                rows, seen = np.repeat(np.arange(len(st)), en - st), items[ranges(st, en - st)]
                scores[torch.from_numpy(rows).to(scores.device),
                       torch.from_numpy(seen - FIRST_ITEM).to(scores.device)] = float("-inf")
            top = torch.topk(scores, k, dim=1)
            out_ids.append(top.indices.cpu().numpy() + FIRST_ITEM)
            out_scores.append(top.values.cpu().numpy())
        if not out_ids:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate(out_ids), np.concatenate(out_scores)

    # ---- training helpers ----------------------------------------------------------------------
    @staticmethod
    def _user_windows(train: Interactions, width: int, min_events: int,
                      step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded windows [R, width] of the last ``width`` training items of every user with at least
        ``min_events`` events, and their non-padding counts [R].

        ``step > 0``: a history longer than ``width`` also gives the windows starting ``step``, ``2 step``, ...
        items before its last window's start, and one starting at its first item (the sliding windows of
        BERT4Rec's reference data generator, ``gen_data_fin.py``)."""
        lengths = train.lengths
        users = np.flatnonzero(lengths >= min_events)
        if len(users) == 0:
            raise DataError(f"{train.source}: no user has {min_events} training event(s); nothing to learn from")
        starts, lengths = train.offsets[users].astype(np.int64), lengths[users].astype(np.int64)
        ends = starts + lengths
        if step > 0:
            extra = np.where(lengths > width, -(-(lengths - width) // step), 0)  # windows before the last one
            user = np.repeat(np.arange(len(users)), extra + 1)
            k = np.arange(len(user)) - np.repeat(np.cumsum(extra + 1) - (extra + 1), extra + 1)  # 0 = last window
            back = np.maximum(ends[user] - k * step, starts[user] + width)  # the furthest back starts at the first item
            ends = np.where(k > 0, back, ends[user])
            starts, lengths = starts[user], ends - starts[user]
        all_windows = torch.from_numpy(windows(train.items, starts, ends, width))
        return all_windows, torch.from_numpy(np.minimum(lengths, width))

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
            model.train_result_ = TrainResult([], data["best_epoch"], data["best_metric"],
                                              data.get("stop_reason", "epochs"))
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
