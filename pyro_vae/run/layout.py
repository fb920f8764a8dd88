"""The names of the files in a run directory (``rundir.py`` says what each holds and how they
are written)."""

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = (
    "config.toml",
    "metrics.jsonl",
    "checkpoint.pt",
)
BEST_FILE = "best.pt"  # the checkpoint of the epoch with the highest validation ELBO
ENVIRONMENT_FILE = (
    "environment.json"  # versions and device of each start (environment.py)
)
LOCK_FILE = ".lock"
TENSORBOARD_DIR = "tensorboard"  # the TensorBoard log (train.tensorboard = true)
# the files a run writes: a new run moves these (and nothing else) aside
RUN_FILES = (
    CONFIG_FILE,
    METRICS_FILE,
    CHECKPOINT_FILE,
    BEST_FILE,
    "evaluation.json",
    "data.json",
    ENVIRONMENT_FILE,
    "elbo.png",
    "reconstructions.png",
    "samples.png",
    "bound_ladder.png",
    "kl_per_dim.png",
    TENSORBOARD_DIR,
)
REPLACED, REPLACING = ".replaced", ".replaced.partial"
