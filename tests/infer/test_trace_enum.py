"""The ``enum`` objective and the importance weights of ``infer.traces`` with a guide whose
discrete site is enumerated: on a model with only a class y, both are exact sums over y.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate

from pyro_vae.infer.traces import log_weights
from pyro_vae.registry import OBJECTIVES

LOG_PI = torch.tensor([0.2, 0.5, 0.3]).log()
MEANS = torch.tensor([-2.0, 0.0, 3.0])
Q_LOGITS = torch.tensor([[0.3, -0.1, 1.0], [2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
X = torch.tensor([-1.5, 0.4, 2.0])


def model(x):
    with pyro.plate("data", len(x)):
        y = pyro.sample("y", dist.Categorical(logits=LOG_PI))
        pyro.sample("x", dist.Normal(MEANS[y], 1.0), obs=x)


@config_enumerate
def guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Categorical(logits=Q_LOGITS))


def joint() -> torch.Tensor:
    """log p(x, y) for every (row, y)."""
    return LOG_PI + dist.Normal(MEANS, 1.0).log_prob(X[:, None])


def test_the_enum_objective_is_the_exact_sum_over_y():
    q = Q_LOGITS.softmax(-1)
    exact = (q * (joint() - q.log())).sum()
    for particles in (1, 4):
        elbo = OBJECTIVES.build("enum", None, {"num_particles": particles})
        assert abs(-elbo.loss(model, guide, X) - exact.item()) < 1e-5


def test_importance_weights_sum_the_enumerated_site_out():
    log_w = log_weights(model, guide, 5, X)
    assert log_w.shape == (5, 3)
    assert torch.allclose(log_w, joint().logsumexp(-1).expand(5, 3), atol=1e-5)
