"""`herald bench`: the pipeline's speed, stage by stage, measured on the real stores.

``run.py`` orchestrates, ``recipients.py`` makes the input, ``probes.py`` measures memory and
percentiles, ``baseline.py`` holds the bare task, ``render.py`` prints the results;
``fairness.py`` is the fairness stage, a run of its own.
"""

from worker.bench import fairness
from worker.bench.run import STAGES, Options
from worker.bench.run import run as run_stages


def run(opts: Options) -> dict:
    return fairness.run(opts) if fairness.STAGE in opts.stages else run_stages(opts)


__all__ = ["STAGES", "Options", "run"]
