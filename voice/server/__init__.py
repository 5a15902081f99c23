"""The WebSocket server: sessions, HTTP routes (/healthz, static client), and `voice serve`."""
