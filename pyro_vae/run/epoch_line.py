"""The line a run prints per epoch (the CLI prints it; the library only formats it).

::

    epoch  12/50  train ELBO -96.84  valid ELBO -98.02  test ELBO -97.91  KL 24.12  0.1998 bits/dim  31.4 s
    epoch  13/50  training objective -96.70  31.0 s

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
