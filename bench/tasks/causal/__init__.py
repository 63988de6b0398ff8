"""Causal-LM fine-tuning (`task=causal_lm`): instruction-style SFT data with the loss on the answer only,
label accuracy by likelihood, perplexity, forgetting on general English text. Loading a causal LM (and the packaged
SmolLM2 GGUF) is `bench.models`'.

The training loop, the techniques and the tracker are the classification path's own; this package holds
only what differs for a causal language model.
"""
