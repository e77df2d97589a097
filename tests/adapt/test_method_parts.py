"""The parts of each adaptation method, checked for what they must do: AdaBN touches only BatchNorm running
statistics, the reversal flips the domain gradient into the backbone, lambda follows its schedule, CORAL is zero
only for equal covariances, self-training's rounds and files, the target stream's determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hftl.adapt.adabn import batch_norms, reestimate, running_statistics_kept
from hftl.adapt.coral import coral_loss
from hftl.adapt.dann import dann_lambda, domain_classifier, domain_loss, reverse_gradient
from hftl.adapt.self_training import read_pseudo_labels, round_at, round_starts, write_pseudo_labels
from hftl.adapt.strong_views import strong_view
from hftl.adapt.target_stream import TargetStream


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


class Wrapped(nn.Module):  # reestimate calls model(**inputs), as with a transformers model
    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


def test_adabn_changes_only_batch_norm_running_statistics_to_the_data_s_exact_moments():
    model = Wrapped()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(40, 3, 8, 8) * 3 + 5  # far from the initial statistics (mean 0, var 1)
    batches = [{"pixel_values": images[i : i + 8], "labels": torch.zeros(8)} for i in range(0, 40, 8)]
    assert batch_norms(model) == ["net.1"]
    assert reestimate(model, batches, torch.device("cpu")) == 40
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"net.1.running_mean", "net.1.running_var", "net.1.num_batches_tracked"}
    conv = model.net[0](images)  # the exact mean over every example and position, not a momentum average
    assert torch.allclose(after["net.1.running_mean"], conv.mean(dim=(0, 2, 3)), atol=1e-4)
    assert model.net[1].momentum == 0.1 and model.training  # momentum and modes put back (it was training)


def test_strong_views_leave_batch_norm_running_statistics_as_they_were():
    model = Wrapped().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with running_statistics_kept(model):
        model(pixel_values=torch.randn(8, 3, 8, 8) * 5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.net[1].track_running_stats
    model(pixel_values=torch.randn(8, 3, 8, 8) * 5)  # outside: a training forward updates them again
    assert not torch.equal(before["net.1.running_mean"], model.state_dict()["net.1.running_mean"])


def test_the_reversal_flips_the_sign_of_the_domain_gradient_into_the_backbone():
    torch.manual_seed(0)
    backbone, classifier = nn.Linear(6, 5), domain_classifier(5, 16).eval()  # eval: no dropout, so both passes agree
    source, target = torch.randn(8, 6), torch.randn(8, 6) + 1

    def backbone_grad(lambd: float | None) -> torch.Tensor:
        backbone.zero_grad()
        fs, ft = backbone(source), backbone(target)
        if lambd is None:  # the plain domain loss, no reversal
            logits = classifier(torch.cat([fs, ft])).squeeze(-1)
            labels = torch.cat([torch.zeros(8), torch.ones(8)])
            nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        else:
            domain_loss(classifier, fs, ft, lambd).backward()
        return backbone.weight.grad.clone()

    plain, reversed_ = backbone_grad(None), backbone_grad(0.3)
    assert plain.abs().sum() > 0
    assert torch.allclose(reversed_, -0.3 * plain, atol=1e-6)
    x = torch.ones(3, requires_grad=True)
    reverse_gradient(x, 2.0).sum().backward()
    assert x.grad.tolist() == [-2.0, -2.0, -2.0]


def test_dann_lambda_rises_from_zero_on_the_paper_s_schedule():
    values = [dann_lambda(s, 100, weight=1.0, gamma=10.0) for s in range(0, 101, 10)]
    assert values[0] == 0.0 and all(a < b for a, b in zip(values, values[1:]))
    assert values[5] == pytest.approx(2 / (1 + math.exp(-5)) - 1) and values[-1] == pytest.approx(0.99991, abs=1e-5)
    assert dann_lambda(50, 100, weight=0.5, gamma=10.0) == pytest.approx(0.5 * values[5])


def test_coral_is_zero_for_equal_covariances_and_grows_with_the_difference():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    assert coral_loss(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift of the mean is not CORAL's business
    near, far = coral_loss(x, x * 1.5).item(), coral_loss(x, x * 3.0).item()
    assert 0 < near < far
    y = x.clone().requires_grad_(True)
    coral_loss(y, x * 2).backward()
    assert y.grad.abs().sum() > 0


def test_self_training_rounds_are_spread_over_the_epochs_after_the_first():
    assert round_starts(3, None) == [1, 2] and round_starts(5, 2) == [1, 3] and round_starts(4, 1) == [1]
    assert [round_at(e, [1, 3]) for e in range(5)] == [None, 1, 1, 2, 2]


def test_pseudo_labels_are_written_with_their_confidence_and_read_back_exactly(tmp_path):
    path = tmp_path / "round-1.csv"
    write_pseudo_labels(path, [0, 1, 1], [0.99, 0.5, 0.950000001], ["cat", "dog"], threshold=0.95)
    assert path.read_text().splitlines()[0] == "index,label,confidence,used"
    labels, used = read_pseudo_labels(path, ["cat", "dog"])
    assert labels == [0, 1, 1] and used == [0, 2]


def test_strong_views_change_the_inputs_deterministically_and_keep_special_tokens():
    images = {"pixel_values": torch.rand(4, 3, 16, 16), "labels": torch.zeros(4)}
    a, b = strong_view(images, torch.Generator().manual_seed(1)), strong_view(images, torch.Generator().manual_seed(1))
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and not torch.equal(a["pixel_values"], images["pixel_values"])
    ids = torch.tensor([[101, 5, 6, 7, 8, 9, 10, 11, 12, 102, 0, 0]] * 8)
    text = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    masked = strong_view(text, torch.Generator().manual_seed(0), mask_id=103, special={101, 102, 0})["input_ids"]
    assert (masked == 103).any() and torch.equal(masked[:, [0, 9, 10, 11]], ids[:, [0, 9, 10, 11]])


class Items:
    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [{"x": i} for i in indices]


def test_the_target_stream_is_a_pure_function_of_epoch_and_batch_and_covers_the_pool():
    stream = TargetStream(Items(10), lambda items: {"x": torch.tensor([i["x"] for i in items])}, batch_size=4, seed=3)
    first = [stream.indices(0, i) for i in range(5)]
    again = TargetStream(Items(10), stream.collate, batch_size=4, seed=3)
    assert [again.indices(0, i) for i in (4, 2, 0)] == [first[4], first[2], first[0]]  # any order, the same batches
    assert sorted(sum(first[:2], []) + first[2][:2]) == list(range(10))  # one cycle is a permutation
    assert stream.indices(1, 0) != first[0]  # another epoch, another order
    stream.set_pool([7, 8])
    assert set(stream.indices(0, 0)) == {7, 8}
    assert stream.batch(0, 0, torch.device("cpu"))["x"].tolist() == stream.indices(0, 0)
