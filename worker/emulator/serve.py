"""`python -m worker.emulator.serve --port P [--knobs JSON]`: the emulators in the foreground."""

from __future__ import annotations

import argparse

import uvicorn

from worker.emulator.app import Emulator, Knobs
from worker.emulator.asgi import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--knobs", default="{}", help="Knobs as JSON")
    args = parser.parse_args(argv)
    knobs = Knobs.model_validate_json(args.knobs)
    uvicorn.run(create_app(Emulator(knobs)), host=args.host, port=args.port,
                log_level="warning", access_log=False,
                # Well past any pause between a client's requests: a connection closed under a
                # client's reuse turns a send ambiguous, which a real provider's longer timeout avoids.
                timeout_keep_alive=120)


if __name__ == "__main__":
    main()
