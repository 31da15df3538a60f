"""The training loop shared by every neural model: epochs, early stopping, best weights, progress.

Models supply two callables: ``batches(generator)`` yielding ``(n_sequences, batch)`` and
``step_loss(batch) -> scalar tensor``; plus an optional ``validate() -> dict`` of metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    seconds: float  # training time of this epoch (without validation)
    sequences_per_s: float
    valid_seconds: float = 0.0
    elapsed: float = 0.0  # wall time since training started, validation included
    valid: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int
    best_metric: float | None
    stop_reason: str = "epochs"  # "epochs" (ran them all), "patience" (early stop) or "time_budget"

    def to_dict(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_metric": self.best_metric, "stop_reason": self.stop_reason,
                "epochs": [asdict(r) for r in self.history]}


def train_loop(net: torch.nn.Module, batches: Callable[[torch.Generator], Iterable], n_batches: int,
               step_loss: Callable[[object], torch.Tensor], validate: Callable[[], dict] | None, *,
               epochs: int, patience: int, lr: float, generator: torch.Generator,
               metric: str = "NDCG@10", betas=(0.9, 0.98), progress: bool = True,
               optimizer: torch.optim.Optimizer | None = None, time_budget: float | None = None) -> TrainResult:
    """Train with ``optimizer`` (default: Adam, one fused kernel for all parameters); after each epoch
    validate, keep the best weights, stop after ``patience`` epochs without improvement of ``metric``;
    the network ends holding the best weights.

    ``time_budget`` (seconds of wall time, validation included) stops training after the first epoch that
    ends past it; an epoch is never cut short, so the run can overshoot by up to one epoch.
    """
    if optimizer is None:
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, fused=True)
    history: list[EpochRecord] = []
    best_metric, best_epoch, best_state, stop_reason = None, 0, None, "epochs"
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        tick, total_loss, n_seen, n_steps = time.perf_counter(), 0.0, 0, 0
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
        for n_sequences, batch in batches(generator):
            loss = step_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            n_seen += n_sequences
            n_steps += 1
            bar.update(1)
            if n_steps % 10 == 0 or n_steps == n_batches:
                bar.set_postfix(loss=f"{total_loss / n_steps:.4f}",
                                seq_s=f"{n_seen / (time.perf_counter() - tick):.0f}")
        bar.close()
        seconds = time.perf_counter() - tick
        record = EpochRecord(epoch, total_loss / max(n_steps, 1), seconds, n_seen / max(seconds, 1e-9))
        if validate is not None:
            tick = time.perf_counter()
            net.eval()
            record.valid = validate()
            record.valid_seconds = time.perf_counter() - tick
        record.elapsed = time.perf_counter() - start
        history.append(record)
        value = record.valid.get(metric) if record.valid else None
        log.info("epoch %d: loss %.4f, %.1f s, %.0f seq/s%s", epoch, record.loss, seconds,
                 record.sequences_per_s, f", valid {metric} {value:.4f}" if value is not None else "")
        if value is None:
            best_epoch = epoch
        elif best_metric is None or value > best_metric:
            best_metric, best_epoch = value, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            log.info("early stop: no %s gain for %d epochs; best epoch %d (%.4f)", metric, patience,
                     best_epoch, best_metric)
            stop_reason = "patience"
            break
        if time_budget is not None and record.elapsed >= time_budget and epoch < epochs:
            log.info("time budget of %.0f s spent after epoch %d (%.0f s); best epoch %d", time_budget, epoch,
                     record.elapsed, best_epoch)
            stop_reason = "time_budget"
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainResult(history, best_epoch, best_metric, stop_reason)
