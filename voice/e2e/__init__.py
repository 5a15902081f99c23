"""The end-to-end path: streaming codec stages around a speech model (`codec-echo` until the speech LM lands)."""
