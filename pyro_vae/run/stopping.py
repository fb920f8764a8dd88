"""Early stopping: end a run after ``train.patience`` epochs without a better validation
ELBO (Prechelt 1998, "Early stopping - but when?"). ``best.pt`` already holds the epoch with
the highest validation ELBO (rundir.py), so stopping loses nothing.

The rule reads only the metrics rows, which the checkpoint holds: a resumed run decides as an
uninterrupted one would, and a run that has stopped is recognised when it is resumed.
"""

from typing import Dict, List, Optional

from pyro_vae.run.rundir import best_epoch


def stop_reason(metrics: List[Dict], patience: int) -> Optional[str]:
    """Why training stops after the last row of ``metrics``, or None to go on: with
    ``patience`` > 0, the last row was scored on the validation set and at least
    ``patience`` epochs have passed since the epoch of the best validation ELBO."""
    if patience == 0 or not metrics or "valid_elbo" not in metrics[-1]:
        return None
    best = best_epoch(metrics)
    last = metrics[-1]["epoch"]
    if best is None or last - best < patience:
        return None
    value = next(m["valid_elbo"] for m in metrics if m["epoch"] == best)
    return (
        f"no better validation ELBO for {last - best} epochs (train.patience = "
        f"{patience}); the best, {value:.2f} nats at epoch {best}, is kept in best.pt"
    )
