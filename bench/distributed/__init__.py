"""One run across several processes (GPUs): DDP and FSDP2 through torchrun (`trainer.strategy`, `trainer.nproc`).

`launch` starts the ranks (unless a launcher already did), `ranks` is what each rank does around the one
training loop, `wrap` builds its model and batches, `figures` gathers what every rank measured on rank 0.
"""
