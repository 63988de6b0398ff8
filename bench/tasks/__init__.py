"""What is trained on and how it is scored, per task: the task protocol (`base`), classification
(`classification`, `metrics`), causal-LM SFT (`causal`), and the data itself: sources, three splits without
near-duplicates, tokenized batches (`data`, `splits`)."""
