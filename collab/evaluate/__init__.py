"""`collab eval`: simulate conversations of models with a user, score them and report with bootstrap CIs.

  runner     run the conversations (batched, resumable) and drive aggregation and reporting; recipe eval stages
  command    `collab eval`: an eval stage built from flags, run through the same runner
  modes      Lost-in-Conversation modes (sharded, full, concat) as task transformations
  store      the append-only conversations.jsonl that is also the resume state
  aggregate  conversation rows -> per-task values -> per-model estimates and paired comparisons
  bootstrap  vectorised percentile-bootstrap CIs over tasks
  report     results.json, report.md, report.html and W&B

Scores come from collab.reward (the MR code of training and data) and every backend, the simulator and the judge
from collab.factory.

See docs/evaluation.md.
"""

from collab.evaluate.modes import MODES, apply_mode
from collab.evaluate.runner import EvalSettings, ModelRef, evaluate, run_eval_stage

__all__ = ["MODES", "EvalSettings", "ModelRef", "apply_mode", "evaluate", "run_eval_stage"]
