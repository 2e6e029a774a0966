"""Herald's sending side: the Celery app, its tasks, the send path, adapters, API and CLI.

Importing it registers what the domain asks of it (campaigns.ports), so any process that uses
the worker side, whatever its entry point, can submit, resume and cancel campaigns.
"""

from campaigns import ports
from worker import tasks
from worker.app import app
from worker.providers import KINDS

# A campaign's first window is published by whoever starts it (the receipt answers after it), so
# its sends queue at once behind at most one window of each other campaign, not behind the
# fan-out task too.
ports.register(start_dispatch=tasks.fan_out, cancel_at_provider=tasks.cancel_at_provider.delay,
               kinds=KINDS)

__all__ = ["app"]
