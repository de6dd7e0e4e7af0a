"""The course's one rule for a mean over a few seeds: its 95 % Student-t interval."""

from __future__ import annotations

T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student's t, 97.5th percentile, for 1..30 degrees of freedom (two-sided 95 %); 1.96 beyond."""


def seed_interval(stderr: float, seeds: int) -> float:
    """Half-width of the 95 % interval of a mean over `seeds` values with standard error `stderr`: Student's t with
    seeds − 1 degrees of freedom. With 3 seeds that is 4.3 standard errors, not 2: a mean over so few seeds must stand
    much further from zero before it says anything."""
    if seeds < 2:
        raise ValueError(f"an interval over seeds needs at least two seeds, got {seeds}.")
    return (T_975[seeds - 2] if seeds - 1 <= len(T_975) else 1.96) * stderr
