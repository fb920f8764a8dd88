"""The line a run prints per epoch (the CLI prints it; the library only formats it), e.g. a
scored epoch of ``pyro-vae train --config mnist`` (one line, wrapped here) and an epoch of
the digits that was not scored::

    epoch 1/2  train ELBO -223.17  valid ELBO -221.58  test ELBO -221.75  KL 34.16
        valid 0.4078 bits/dim  686.3 s
    epoch  2/12  training objective -43.80  1.9 s

Epochs that the evaluation budget did not score (``epoch_eval.py``) show the training
objective alone (the mean loss of the epoch's steps, with the KL weight of the schedule).
Plain text, one line, nothing that only a terminal understands, so it reads the same in a
log file.
"""

from typing import Dict


def epoch_line(row: Dict, epochs: int) -> str:
    """One metrics row (``fit``'s) as a line: epoch, train / validation / test ELBO, the test
    KL, bits/dim where the row has them, seconds."""
    width = len(str(epochs))
    parts = [f"epoch {row['epoch']:>{width}}/{epochs}"]
    if "test_elbo" in row:
        parts.append(f"train ELBO {row['train_elbo']:.2f}")
        if "valid_elbo" in row:
            parts.append(f"valid ELBO {row['valid_elbo']:.2f}")
        parts += [f"test ELBO {row['test_elbo']:.2f}", f"KL {row['kl']:.2f}"]
        bits = row.get("valid_bits_per_dim", row.get("test_bits_per_dim"))
        if bits is not None:
            which = "valid" if "valid_bits_per_dim" in row else "test"
            parts.append(f"{which} {bits:.4f} bits/dim")
    else:
        parts.append(f"training objective {row['train_objective']:.2f}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)
