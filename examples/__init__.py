"""Example workflows and the activities they use (served by the demo's worker)."""
