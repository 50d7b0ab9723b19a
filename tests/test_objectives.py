import pytest
import torch

from das_ag.objectives.aesthetic import aesthetic_loss
from das_ag.objectives.regularisers import l1, total_variation
from das_ag.objectives.text import text_loss, text_score


def test_unit_weights_give_mean_positive_minus_mean_negative():
    sims = torch.tensor([0.30, 0.20, 0.10, 0.05])
    weights = torch.tensor([1.0, 1.0, -1.0, -1.0])
    assert text_score(sims, weights).item() == pytest.approx(0.25 - 0.075)
    assert text_loss(sims, weights, 5.0).item() == pytest.approx(-5 * (0.25 - 0.075))


def test_original_das_signed_weights():
    sims = torch.tensor([0.30, 0.10])
    assert text_score(sims, torch.tensor([1.0, -0.3])).item() == pytest.approx(0.30 - 0.3 * 0.10)


def test_only_positive_prompts():
    assert text_score(torch.tensor([0.2, 0.4]), torch.tensor([1.0, 1.0])).item() == pytest.approx(0.3)


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
