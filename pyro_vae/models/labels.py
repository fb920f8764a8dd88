"""Which training rows keep their labels in semi-supervised training: N labels (or a fraction
of the labelled rows), balanced across the classes, drawn with a seed.

``keep_labels(labels, classes, keep, seed)`` gives the label column (the label where kept,
-1 elsewhere) and the record a run directory stores (``labels.json``): the kept rows, their
labels, the count per class and the seed. With N labels over K classes each class keeps
floor(N / K) rows, and the first N mod K classes one more (Kingma et al. 2014 keep equal
numbers per class). Rows the data set itself leaves unlabelled (label -1 in its training
split, ``data/labels.py``) stay unlabelled: the N are drawn from the labelled rows, and
``--labels -1`` keeps every label the data set has.
"""

from typing import Dict, Tuple

import torch

from pyro_vae.data.labels import UNLABELLED
from pyro_vae.errors import ConfigError

# the label column's value for a row whose label training does not see
HIDDEN = UNLABELLED
ALL = -1.0  # [model] labels: keep every label


def label_count(keep: float, rows: int) -> int:
    """N labels from ``[model] labels``: -1 all, a number >= 1 that many, a fraction in
    (0, 1) that share of the ``rows`` labelled rows (rounded), 0 none."""
    if keep == ALL:
        return rows
    if keep < 0 or (keep >= 1 and keep != int(keep)):
        raise ConfigError(
            f"[model] labels (--labels) must be -1 (all), a whole number of labels, or a "
            f"fraction between 0 and 1, got {keep:g}"
        )
    count = int(keep) if keep >= 1 else int(round(keep * rows))
    if count > rows:
        raise ConfigError(
            f"--labels {count} asks for more labels than the {rows} labelled training "
            f"rows hold"
        )
    return count


def check_classes(labels: torch.Tensor, classes: int) -> None:
    """Refuse class labels outside 0..classes - 1, naming the setting that fixes it."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
        raise ConfigError(
            f"labels must lie in 0..{classes - 1} ([model] classes = {classes}); the data "
            f"holds {int(labels.min())}..{int(labels.max())}: set --set model.classes=N"
        )


def with_labels(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` with the label appended as one more column: how the label-reading
    families get their labels through ``fit`` and ``evaluate``."""
    return torch.cat([x, labels.to(x)[:, None]], -1)


def split_labels(x: torch.Tensor, data_dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images, int64 labels) of rows made by ``with_labels`` from ``data_dim`` pixels."""
    return x[..., :data_dim], x[..., data_dim].round().long()


def keep_labels(
    labels: torch.Tensor, classes: int, keep: float, seed: int
) -> Tuple[torch.Tensor, Dict]:
    """The label column (int64, ``HIDDEN`` where dropped) and its record (see the module)."""
    labels = labels.long().cpu()
    labelled = (labels != UNLABELLED).nonzero().flatten()
    if len(labels) and not len(labelled):
        raise ConfigError(
            f"every one of the {len(labels)} training labels is -1 (unlabelled); the "
            f"semi_supervised family needs some labelled rows: give their classes in "
            f"train_labels"
        )
    check_classes(labels[labelled], classes)
    count = label_count(keep, len(labelled))
    if count == len(labelled):
        kept = labelled
    else:
        generator = torch.Generator().manual_seed(seed)
        chosen = []
        for c in range(classes):
            want = count // classes + (c < count % classes)
            rows = (labels == c).nonzero().flatten()  # labelled rows of class c
            if want > len(rows):
                raise ConfigError(
                    f"--labels {count} needs {want} rows of class {c} (balanced over "
                    f"{classes} classes), but the training set has {len(rows)} labelled"
                )
            chosen.append(rows[torch.randperm(len(rows), generator=generator)[:want]])
        kept = torch.cat(chosen).sort().values
    column = torch.full_like(labels, HIDDEN)
    column[kept] = labels[kept]
    record = {
        "kept_rows": kept.tolist(),
        "labels": labels[kept].tolist(),
        "count": len(kept),
        "per_class": torch.bincount(labels[kept], minlength=classes).tolist(),
        "rows": len(labels),
        "labelled_rows": len(labelled),
        "seed": seed,
    }
    return column, record
