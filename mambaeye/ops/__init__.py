"""Functional operations (no nn.Module): the selective scan and its backends."""

from __future__ import annotations

from .selective_scan import available_backends, selective_scan, selective_scan_naive

__all__ = ["selective_scan", "selective_scan_naive", "available_backends"]
