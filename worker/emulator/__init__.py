"""Local emulators of the provider APIs in ../shared/seeds, for tests, the demo and the benchmark.

One ASGI app serves every provider under its own prefix (``/tikosms``, ...). Each is as strict as
its provider's document: requests are checked against the OpenAPI documents in ``specs/``
(AikData, TikoSMS, MobSMS) or the prose (Laravel, SMS for AI; what it leaves open is marked as an
assumption), and answers carry only the fields the documents show. Each accepted message is
recorded, so tests can prove exactly-once delivery from the emulator's side.
"""

from worker.emulator.app import Emulator, Knobs
from worker.emulator.asgi import create_app

__all__ = ["Emulator", "Knobs", "create_app"]
