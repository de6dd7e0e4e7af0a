"""Helpers for the RLHF course: data, reward, offline models, PPO math and training loops."""

from .profiles import Profile, get_profile

__all__ = ["Profile", "get_profile"]
__version__ = "0.1.0"
