"""Load balancing across an upstream's targets, and their health (issue 9)."""
