"""Deployment cost (`deploy.measure`, on by default): after training, outside the training figures, each form a
user could serve the trained model in (the adapter unmerged on its base, merged into 16-bit weights, merged and
quantized again to 4 bits, the full fine-tuned checkpoint) is saved, loaded back, checked against the unmerged
model on the test split and timed serving. Metrics: `deploy/<form>/<figure>` (see bench.measure.deploy.measure)."""
