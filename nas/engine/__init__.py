"""The engine: data, augmentation, the recipe, the training loop, checkpoints, benchmarks of speed."""
