"""Model loading and building: where a model comes from and how it loads (`load`, `gguf`, `causal`), the device and
dtypes (`precision`), the technique's model built from it (`build`, which asks the technique in
`bench.techniques` what differs), its static size (`footprint`), and what a run ships (`shipping`)."""
