"""The cascade pipeline: streaming ASR -> LLM -> TTS behind the same server, VAD and tracer as end-to-end."""
