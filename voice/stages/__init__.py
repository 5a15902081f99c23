"""Stages shared by every pipeline (VAD) and simple ones (echo)."""
