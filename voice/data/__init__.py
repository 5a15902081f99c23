"""Spoken-dialogue corpus: dialogues and answer checking, TTS voices, the build, import of real recordings."""
