"""Running: the training loop and everything a run leaves on disk.

``train`` (``fit``: the SVI loop), ``rundir`` (the run directory: layout, lock, atomic epoch
commit, resume checks), ``checkpoint`` (atomic writes, what a checkpoint holds),
``distributed`` (execution under torchrun), ``tensorboard`` (the optional TensorBoard log).

May import: ``estimate`` and every wing below it.
"""
