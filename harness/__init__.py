"""The run harness around the paper's modules: the command line, its config and its one-line errors (cli),
device, seeding, log and compile (runs), α's gradient record (alpha_grads), atomic checkpoints and stop
signals (checkpoints), checkpoints that hash the frozen random features instead of storing them
(frozen_state), torchrun/DDP (ddp), datasets and the search split (data), in-memory batches and
augmentation (batching), streamed image files (stream), the ImageNet subset of PC-DARTS
(imagenet_subset), reading a run folder back (rundir), a sweep's runs started N at a time as child
processes (jobs), its table (sweep_table) and the data ladder over sweeps (ladder), timing a shared
device (concurrency), per-op scales (op_scale), the faster eager NB201 cell (fast_supernet), the figures
(*figure*), and the bookkeeping that keeps the loops of search.py and train.py down to the algorithm
(search_run, train_run).

The paper's modules (ops, spaces, supernet, genotypes, architect, networks, bnnas) import nothing from
here, and nothing here imports an entry script.
"""
