"""Orchestration, the top below the CLI: one run's skeleton (`runner`), a job of `bench run` and its own process
(`cells`, `isolation`), sweeps with one parent run (`sweep`), the fair comparison (`fair`, `fair_select`), and a
rank of a distributed run (`rank_worker`)."""
