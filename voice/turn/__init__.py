"""Turn-taking: the paused-turn set, the end-of-turn model, and how the VAD head uses it."""
