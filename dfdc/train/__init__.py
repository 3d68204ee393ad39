"""Training: the loop and its pieces (data, step, optim, checkpoint, losses)."""
