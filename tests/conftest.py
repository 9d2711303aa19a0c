"""Suite-wide settings.

Hypothesis: no per-example deadline. CI machines are small and shared, and a property that is
slow once is not wrong; tests never assert timings (the brief), and a flaky deadline would be one.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("sealmail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sealmail")
