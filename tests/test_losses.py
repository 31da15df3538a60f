import math

import pytest
import torch

from seqrec import losses
from seqrec.errors import ConfigError


def test_ce_of_uniform_logits_is_log_n():
    n = 777
    hidden, weight = torch.zeros(5, 8), torch.randn(n, 8)
    targets = torch.randint(0, n, (5,))
    assert losses.ce(hidden, weight, targets).item() == pytest.approx(math.log(n), rel=1e-6)
    assert losses.ce_logits(torch.zeros(5, n), targets).item() == pytest.approx(math.log(n), rel=1e-6)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]


@pytest.mark.parametrize("small_chunks", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_fused_ce_matches_plain_cross_entropy_value_and_gradients(device, small_chunks, monkeypatch):
    if small_chunks:  # many chunks (the last one narrower) on either device
        monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 37 * 300)
        monkeypatch.setattr(losses, "_CHUNK_ELEMENTS_GPU", 37 * 300)
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, device=device, requires_grad=True)
    weight = torch.randn(5000, 16, device=device, requires_grad=True)  # several item chunks on a CPU
    targets = torch.randint(0, 5000, (37,), device=device)
    fused = losses.ce(hidden, weight, targets)
    fused.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    plain = losses.ce_logits(hidden @ weight.T, targets)
    plain.backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-6)
    assert torch.allclose(grads[1], weight.grad, atol=1e-6)


@pytest.mark.parametrize("m, n", [(1, 10), (37, 5000), (3000, 54542), (20000, 54542)])
def test_ce_chunks_cover_the_catalogue_once_within_the_device_budget(m, n):
    for device, budget in (("cpu", losses._CHUNK_ELEMENTS), ("cuda", losses._CHUNK_ELEMENTS_GPU)):
        chunks = losses._chunks(m, n, device)
        assert chunks[0].start == 0 and chunks[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:]))
        assert all(m * (c.stop - c.start) <= max(budget, 128 * m) for c in chunks)
    # a GPU step over the Beauty catalogue takes one or two chunks, not hundreds of kernel rounds
    assert len(losses._chunks(3000, 54542, "cuda:0")) == 2 and len(losses._chunks(3000, 54542, "cpu")) > 100


def test_fused_ce_in_bf16_is_close():
    torch.manual_seed(0)
    hidden, weight = torch.randn(20, 16) * 0.3, torch.randn(3000, 16) * 0.3
    targets = torch.randint(0, 3000, (20,))
    exact = losses.ce(hidden, weight, targets).item()
    assert losses.ce(hidden, weight, targets, torch.bfloat16).item() == pytest.approx(exact, rel=1e-2)


def test_bce_closed_form():
    assert losses.bce(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2 * math.log(2))
    assert losses.bce(torch.tensor([30.0]), torch.tensor([-30.0])).item() == pytest.approx(0, abs=1e-6)


def test_sampled_ce_closed_form_and_collision_removal():
    k = 9
    assert losses.sampled_ce(torch.zeros(3), torch.zeros(3, k)).item() == pytest.approx(math.log(k + 1))
    clash = torch.zeros(3, k, dtype=torch.bool)
    clash[:, :4] = True  # four sampled copies of the positive leave the softmax
    assert losses.sampled_ce(torch.zeros(3), torch.zeros(3, k), clash).item() == pytest.approx(math.log(k - 3))


def test_unknown_loss_lists_choices_and_the_registry_says_what_each_needs():
    with pytest.raises(ConfigError, match=r"unknown loss 'mse'; choose from \['ce', 'bce', 'sampled_ce', 'gbce', 'bpr_max'"):
        losses.get("mse")
    with pytest.raises(ConfigError, match=r"choose from \['ce', 'bpr_max'\]"):
        losses.get("bce", ("ce", "bpr_max"))
    assert {name: loss.negatives for name, loss in losses.LOSSES.items()} == {
        "ce": "catalogue", "bce": "one", "sampled_ce": "sampled", "gbce": "sampled", "bpr_max": "sampled", "top1_max": "sampled"}
    assert losses.get("bpr_max").fn is losses.bpr_max


def test_fused_ce_with_bias_matches_plain_cross_entropy_value_and_gradients():
    torch.manual_seed(1)
    hidden = torch.randn(23, 8, requires_grad=True)
    weight = torch.randn(3000, 8, requires_grad=True)
    bias = torch.randn(3000, requires_grad=True)
    targets = torch.randint(0, 3000, (23,))
    fused = losses.ce(hidden, weight, targets, bias=bias)
    fused.backward()
    grads = hidden.grad.clone(), weight.grad.clone(), bias.grad.clone()
    hidden.grad = weight.grad = bias.grad = None
    plain = losses.ce_logits(hidden @ weight.T + bias, targets)
    plain.backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)
    for got, want in zip(grads, (hidden.grad, weight.grad, bias.grad)):
        assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", ["bpr_max", "top1_max"])
def test_a_row_without_negatives_adds_nothing_and_no_nan(name):
    pos = torch.tensor([1.0, 0.5], requires_grad=True)
    neg = torch.tensor([[0.3, 2.0], [0.1, 0.2]], requires_grad=True)
    ignore = torch.tensor([[True, True], [False, True]])  # row 0: every negative ignored
    loss = losses.LOSSES[name].fn(pos, neg, ignore)
    loss.backward()
    alone = losses.LOSSES[name].fn(pos[1:].detach(), neg[1:, :1].detach()) / 2  # row 1 alone, over the 2 rows
    assert torch.isfinite(loss) and torch.allclose(loss, alone) and torch.isfinite(neg.grad).all()
    assert pos.grad[0] == 0 and (neg.grad[0] == 0).all()


def test_gbce_is_the_reference_bce_on_transformed_positive_logits():
    # gSASRec's code: positive logit -> log(1 / (σ(p)^-β - 1)), then mean BCE over every (unmasked) element
    torch.manual_seed(0)
    pos, neg = torch.randn(6, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    rate, t = 4 / 99, 0.75
    beta = rate * (t * (1 - 1 / rate) + 1 / rate)
    assert losses.gbce_beta(rate, t) == pytest.approx(beta)
    transformed = torch.log(1.0 / (torch.sigmoid(pos) ** -beta - 1.0))
    logits = torch.cat([transformed[:, None], neg], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert losses.gbce(pos, neg, sampling_rate=rate, t=t).item() == pytest.approx(expected.item(), rel=1e-9)
    # t = 0 is plain BCE (β = 1), t = 1 weighs the positive by the sampling rate (β = α)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(torch.cat([pos[:, None], neg], 1), labels)
    assert losses.gbce(pos, neg, sampling_rate=rate, t=0.0).item() == pytest.approx(plain.item(), rel=1e-9)
    assert losses.gbce_beta(rate, 1.0) == pytest.approx(rate)
    # an ignored negative leaves the mean
    ignore = torch.zeros(6, 4, dtype=torch.bool)
    ignore[0, 1] = True
    per_element = torch.cat([beta * torch.nn.functional.softplus(-pos),
                             torch.nn.functional.softplus(neg)[~ignore]])
    assert losses.gbce(pos, neg, ignore, sampling_rate=rate, t=t).item() == pytest.approx(
        per_element.mean().item(), rel=1e-9)
