"""The HTTP service: intake, status and control, provider webhooks, health and metrics."""
