"""The speech LM: one model that hears and speaks codec tokens and writes text (docs/speechlm.md)."""
