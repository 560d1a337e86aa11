"""Write services of the workflows app (STYLE.md: logic lives here; callers parse and call one)."""
