"""Apps that break the node-type registry, for the start-up check's tests only (never installed otherwise)."""
