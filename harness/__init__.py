"""The run harness around the paper's modules: config parsing and the CLI's error handling (runs),
atomic checkpoints and stop signals (checkpoints), torchrun/DDP (ddp), datasets and the search split
(data), in-memory batches and augmentation (batching), streamed image files (stream), the ImageNet
subset of PC-DARTS (imagenet_subset), reading a run folder back (rundir), a sweep's runs started N at a
time as child processes (jobs), and the bookkeeping that keeps the loops of search.py and train.py down
to the algorithm (search_run, train_run).

The paper's modules (ops, spaces, supernet, genotypes, architect, networks) import nothing from here.
"""
