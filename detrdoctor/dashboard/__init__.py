"""The live `train` dashboard: state (what to show), render (how), live (the Callback), telemetry (GPU/host)."""

from detrdoctor.dashboard.live import Dashboard

__all__ = ["Dashboard"]
