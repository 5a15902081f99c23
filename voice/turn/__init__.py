"""Turn-taking: the paused-turn set, the end-of-turn model, and how the VAD head uses it."""


def decision_threshold(threshold: float, silence_ms: float, late_ms: float, late_threshold: float) -> float:
    """P(over) that ends a turn after `silence_ms` of silence: `threshold`, or from `late_ms` on (0: never)
    the lower `late_threshold`. The VAD head decides with it, `voice eval turn` replays it."""
    if late_ms > 0 and silence_ms >= late_ms - 1e-6:
        return min(threshold, late_threshold)
    return threshold
