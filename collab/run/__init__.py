"""The run directory: one home for what every stage kind (data, trainers, eval) reads and writes in it.

- `collab.run.layout`: where things are (`StagePaths`, the resolved recipe, DONE markers, which stages finished);
- `collab.run.checkpoints`: which checkpoint of a stage a resume continues from, and pruning after it finished;
- `collab.run.compat`: whether a run can continue under a recipe, or with a number of processes;
- `collab.run.record`: opening a run (writing the resolved recipe after those checks) and reading it back.

Nothing here imports torch, TRL or the trainers: the driver, the launched ranks, data and eval stages all use it.
"""
