"""Training: the loop and its pieces (data, step, optim, checkpoint, losses, dist for several processes)."""
