"""The run harness around the paper's modules: config parsing and the CLI's error handling (runs),
atomic checkpoints and stop signals (checkpoints), torchrun/DDP (ddp), datasets and the search split
(data), in-memory batches and augmentation (batching), streamed image files (stream), the ImageNet
subset of PC-DARTS (imagenet_subset), and reading a run folder back (rundir).

The paper's modules (ops, spaces, supernet, genotypes, architect, networks) import nothing from here.
"""
