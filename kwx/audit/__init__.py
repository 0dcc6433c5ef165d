"""Audits: measured evidence that the data lines up in time and that models use their features stably."""
