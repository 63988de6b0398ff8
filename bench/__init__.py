"""bench: which fine-tuning technique fits your model, task and GPU, measured and recorded in MLflow."""

__version__ = "0.1.0"
