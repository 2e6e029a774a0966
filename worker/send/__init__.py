"""The send path: dispatch, fan-out, routing, limits (throttle, cooldown), settling sends in doubt."""
