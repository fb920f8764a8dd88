"""A probe of M2's training on labelled MNIST (``labels_mnist.py``'s data and nets): after each
epoch, the test error of q(y | x), its mean entropy, and what the generative model says about
the class, from L(x, y) = E_q(z|x,y)[log p(x | y, z) + log p(z) - log q(z | x, y)] for every y
(8 draws of z, the first 500 test images): the error of argmax_y L(x, y), the class the
unlabelled term pulls q(y | x) towards, and how much L(x, y) varies over y (its maximum less
its mean, in nats). Findings: benchmarks/README.md, "Labels".

    python benchmarks/labels_m2_probe.py LABELS ALPHA EPOCHS LABELLED_EVERY [LR HIDDEN LATENT BETA]
"""

import argparse
import sys
from pathlib import Path

import pyro
import torch

from pyro_vae import models
from pyro_vae.models.conditioned_parts import join
from pyro_vae.run.train import fit

sys.path.insert(0, str(Path(__file__).parent))
import labels_mnist as lm  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    labels, alpha, epochs, every = sys.argv[1:5]
    rest = sys.argv[5:] + [None] * 4
    args = argparse.Namespace(
        alpha=float(alpha),
        latent_dim=int(rest[2] or 10),
        hidden=[int(rest[1] or 128)],
        epochs=int(epochs),
        lr=float(rest[0] or 3e-3),
        labelled_every=int(every),
        beta=float(rest[3] or 1.0),
    )
    ds = lm.load(Path("../shared/data"))
    pyro.clear_param_store()
    config = lm.m2_config(args, int(labels), 0)
    m2 = models.build(config, ds.shape)

    @torch.no_grad()
    def probe(row: dict) -> None:
        x, t = ds.test[:500], ds.test_labels[:500]
        error = (m2.class_posterior(ds.test).probs.argmax(-1) != ds.test_labels).float()
        elbos = []
        for y in range(m2.classes):
            onehot = m2._onehot(torch.full((len(x),), y), x)
            q = m2.encoder(join(x, onehot))
            z = q.rsample((8,))
            out = m2.decoder(join(z, onehot.expand(8, *onehot.shape)))
            log_w = m2.likelihood(out).log_prob(x) + m2.prior().log_prob(z)
            elbos.append((log_w - q.log_prob(z)).mean(0))
        elbo = torch.stack(elbos, -1)
        print(
            f"epoch {row['epoch']} error {error.mean().item():.3f} "
            f"H(q) {m2.class_posterior(x).entropy().mean().item():.2f} "
            f"argmax_y L error {(elbo.argmax(-1) != t).float().mean().item():.3f} "
            f"L spread {(elbo.max(-1).values - elbo.mean(-1)).mean().item():.1f}",
            flush=True,
        )

    fit(m2, ds, config, on_epoch=probe)


if __name__ == "__main__":
    main()
