"""Herald's Celery worker: the app, thin tasks, provider adapters, emulators and HTTP ingress."""

from worker.app import app

__all__ = ["app"]
