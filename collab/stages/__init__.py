"""Stages: the kinds a recipe stage may have (`collab.stages.kinds`) and the pipeline that runs a recipe's stages in
order in the driver process (`collab.stages.pipeline`)."""
