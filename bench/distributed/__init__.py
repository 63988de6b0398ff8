"""One run across several processes (GPUs): DDP and FSDP2 through torchrun (`trainer.strategy`, `trainer.nproc`).

`launch` starts the ranks through torchrun (`agent`, which keeps torchrun's failure report; `worker`, each rank's
entry point) unless a launcher already did; `context` tells which rank this process is; `ranks` is what each rank
does around the one training loop; `wrap` builds its model and batches; `figures` gathers what every rank measured
on rank 0; `plan` turns `bench plan`'s single-process prediction into a rank's.
"""
