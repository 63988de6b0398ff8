"""The MLflow side of a run: the run itself with its status however it ends (`tracker`), the store as a shared,
fallible resource (`store`), what the UI shows (`ui_meta`), provenance tags (`provenance`) and the data sets as
MLflow inputs (`datasets`)."""
