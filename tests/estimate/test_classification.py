"""The classification error read from a guide trace at the family's declared discrete site."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.estimate.classification import classification_error
from pyro_vae.models.family import Family, LatentSite


class Threshold(Family):
    """q(y | x): class 1 where x > 0 (with certainty), class 0 elsewhere."""

    latent_sites = (LatentSite("c", 2, discrete=True),)

    def guide(self, x):
        probs = torch.stack([(x[:, 0] <= 0).float(), (x[:, 0] > 0).float()], -1)
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(probs=probs * 0.98 + 0.01))


def test_the_error_and_its_binomial_standard_error():
    x = torch.tensor([[1.0], [-1.0], [2.0], [-3.0]])
    labels = torch.tensor([1, 1, 1, 0])
    result = classification_error(Threshold(), x, labels, batch_size=3)
    assert result == {"site": "c", "error": 0.25, "stderr": math.sqrt(0.25 * 0.75 / 4)}


def test_a_family_without_a_class_is_refused():
    family = Threshold()
    family.latent_sites = (LatentSite("z", 2),)
    with pytest.raises(ConfigError, match="needs a family with a class latent"):
        classification_error(family, torch.zeros(2, 1), torch.zeros(2).long())
