"""Training batches of similar lengths, and bfloat16 autocast on a CPU with bfloat16 matrix units."""

from __future__ import annotations

import torch

import voice.speechlm.train as train_module
from tests.test_speechlm import s2s_example, tiny_model, tokenize
from voice.speechlm.batch import collate, lm_loss, with_noisy_answers
from voice.speechlm.format import Layout, layout_example
from voice.speechlm.train import _Batches, _MixedPrecision, cpu_bf16_matmul
from voice.speechlm.typed import TypedDialogueStream
from voice.speechlm.vocab import Vocab


def _lengths(batch, vocab: Vocab) -> list[int]:
    pad = vocab.special("pad")
    return [int((row != pad).sum()) for row in batch.text]


def test_bucketed_batches_hold_the_same_examples_with_less_padding() -> None:
    vocab, layout = Vocab(256, 3, 16), Layout((0, 1, 1), 2)
    plain = iter(_Batches(TypedDialogueStream(vocab, layout, tokenize, seed=3), 8, seed=0))
    bucketed_stream = TypedDialogueStream(vocab, layout, tokenize, seed=3)
    bucketed = iter(_Batches(bucketed_stream, 8, seed=0, buckets=4))
    a = [next(plain) for _ in range(4)]                  # the same 32 dialogues, drawn in the same order
    b = [next(bucketed) for _ in range(4)]
    assert sorted(n for x in a for n in _lengths(x, vocab)) == sorted(n for x in b for n in _lengths(x, vocab))
    assert all(x.text.shape[0] == 8 for x in b)
    spans = sorted((min(_lengths(x, vocab)), max(_lengths(x, vocab))) for x in b)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))     # neighbours in length
    computed = lambda xs: sum(x.text.numel() for x in xs)    # noqa: E731   steps computed, padding included
    assert computed(b) < 0.85 * computed(a)


def test_mixed_precision_on_a_cpu_with_bf16_units_autocasts_the_forward_in_eager_attention(monkeypatch) -> None:
    model = tiny_model().train()
    vocab, layout = model.config.vocab, model.config.layout
    batch = collate([layout_example(s2s_example(), vocab, layout, tokenize)] * 2, vocab)
    reference = lm_loss(model, batch)
    monkeypatch.setattr(train_module, "cpu_bf16_matmul", lambda: False)
    assert not _MixedPrecision(model, "cpu", True).enabled          # float32 where bfloat16 is emulated
    monkeypatch.setattr(train_module, "cpu_bf16_matmul", lambda: True)
    assert not _MixedPrecision(model, "cpu", False).enabled         # --fp32
    mixed = _MixedPrecision(model, "cpu", True)
    assert mixed.enabled
    before = model.backbone.config._attn_implementation
    for _ in range(2):                                              # entered once per forward pass
        with mixed:
            assert torch.is_autocast_enabled("cpu")
            assert model.backbone.config._attn_implementation == "eager"
            parts = lm_loss(model, batch)
        assert not torch.is_autocast_enabled("cpu") and model.backbone.config._attn_implementation == before
    assert abs(float(parts.loss.detach()) - float(reference.loss.detach())) < 0.05 * float(reference.loss)
    parts.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_cpu_bf16_matmul_reads_the_cpu_flags() -> None:
    assert isinstance(cpu_bf16_matmul(), bool)


def test_answer_noise_changes_only_the_answer_codes_the_model_reads_never_the_targets() -> None:
    model = tiny_model().train()
    vocab, layout = model.config.vocab, model.config.layout
    size = model.config.codebook_size
    batch = collate([layout_example(s2s_example(), vocab, layout, tokenize)] * 2, vocab)
    answer = batch.audio_target & (batch.audio < size)
    assert answer.any() and (~answer & (batch.audio < size)).any()        # answer codes, and the user's
    g = torch.Generator().manual_seed(0)
    assert torch.equal(with_noisy_answers(batch, 0.0, size, g), batch.audio)
    everything = with_noisy_answers(batch, 1.0, size, g)
    assert torch.equal(everything[~answer], batch.audio[~answer])         # the user's codes, no-code marks and END kept
    assert (everything[answer] != batch.audio[answer]).float().mean() > 0.8   # (a random code may be the true one)
    assert int(everything.max()) <= int(batch.audio.max())
    some = with_noisy_answers(batch, 0.3, size, g)
    changed = float((some[answer] != batch.audio[answer]).float().mean())
    assert 0.15 < changed < 0.4
    before = [t.clone() for t in (batch.text, batch.audio)]
    torch.manual_seed(0)
    noisy = lm_loss(model, batch, answer_noise=0.5)
    assert torch.equal(batch.text, before[0]) and torch.equal(batch.audio, before[1])   # the targets untouched
    clean = lm_loss(model, batch)
    assert abs(noisy.text_loss - clean.text_loss) > 0 or abs(noisy.audio_loss - clean.audio_loss) > 0
    noisy.loss.backward()
