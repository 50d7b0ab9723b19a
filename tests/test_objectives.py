import pytest
import torch

from das_ag.objectives.aesthetic import aesthetic_loss
from das_ag.objectives.regularisers import l1, total_variation
from das_ag.objectives.text import SignedWeights


def test_unit_weights_give_mean_positive_minus_mean_negative():
    sims = torch.tensor([0.30, 0.20, 0.10, 0.05])
    signed = SignedWeights([1.0, 1.0, -1.0, -1.0])
    assert signed.score(sims).item() == pytest.approx(0.25 - 0.075)
    assert (signed.attracting(sims).item(), signed.repelling(sims).item()) == pytest.approx((0.25, 0.075))


def test_original_das_signed_weights():
    sims = torch.tensor([0.30, 0.10])
    assert SignedWeights([1.0, -0.3]).score(sims).item() == pytest.approx(0.30 - 0.3 * 0.10)


def test_only_positive_prompts():
    signed = SignedWeights([1.0, 1.0])
    assert signed.score(torch.tensor([0.2, 0.4])).item() == pytest.approx(0.3)
    assert signed.repel is None and signed.repelling(torch.tensor([0.2, 0.4])) is None


def test_only_repelling_weights_average_all_of_them():
    # Image prompts may all repel: then the score is mean(w * sim) over every one.
    signed = SignedWeights([-1.0, -3.0])
    assert signed.score(torch.tensor([0.2, 0.4])).item() == pytest.approx((-0.2 - 1.2) / 2)
    assert signed.attracting(torch.tensor([0.2, 0.4])) is None


def test_aesthetic_sign():
    score = torch.tensor(6.0)
    assert aesthetic_loss(score, +1, 3.0).item() == pytest.approx(-1.8)  # minimising raises the score
    assert aesthetic_loss(score, -1, 3.0).item() == pytest.approx(1.8)
    assert aesthetic_loss(score, 0, 3.0).item() == 0


def test_regularisers():
    flat = torch.ones(2, 3, 8, 8)
    assert total_variation(flat).item() == 0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1
    assert total_variation(stripes).item() == pytest.approx(1.0)
    assert l1(-flat).item() == 1
