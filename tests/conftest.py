"""Shared pytest configuration: Hypothesis profiles and the nested-lab options."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI keeps example counts small for its 90-minute budget; "soak" is for long runs.
settings.register_profile("ci", max_examples=50, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("soak", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
