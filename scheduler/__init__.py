"""Time-based work, run from celery beat over state kept in the database."""
