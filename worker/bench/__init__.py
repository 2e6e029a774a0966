"""`herald bench`: the pipeline's speed, stage by stage, measured on the real stores.

``run.py`` orchestrates, ``recipients.py`` makes the input, ``probes.py`` measures memory and
percentiles, ``baseline.py`` holds the bare task, ``render.py`` prints the results.
"""

from worker.bench.run import STAGES, Options, run

__all__ = ["STAGES", "Options", "run"]
