"""Trigger services: schedules (``schedules``) and webhooks (``hooks``)."""
