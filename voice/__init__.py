"""Voice: a real-time speech-to-speech assistant (end-to-end speech LM and a cascade baseline)."""

__version__ = "0.1.0"
