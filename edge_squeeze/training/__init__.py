"""Training, split by job: ``options`` (what a run does, torch-free), ``data`` (folders, augmentation,
loaders), ``recipes`` (optimizer, schedule, mixed precision), ``checkpoints`` (model set-up, checkpoints,
curves), ``loop`` (epochs, DDP, resume). ``edge_squeeze.train`` re-exports the public names."""
