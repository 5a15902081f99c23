"""The speech LM: a Llama-style `transformers` model that reads and writes a text stream and K codebooks.

One step per codec frame. The step's input is the sum of the text-stream embedding and the audio
input: each codebook's code looked up in the *codec's own codebook vectors* (a fixed, meaningful
embedding: a probe heard far better through them than through fresh learned embeddings, see
docs/speechlm.md), projected per codebook to the model width; a learned vector stands for "no code".
Outputs: the text-stream head (tied to its embedding) and one head per codebook over its entries
plus "no code" (which codebook 0 uses to say the answer's audio is over).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel, PretrainedConfig, PreTrainedModel

from voice.speechlm.format import Layout
from voice.speechlm.lexicon import SNAP_DISTANCE
from voice.speechlm.vocab import Vocab


def _turns(spans) -> list:
    """The user-turn spans (batch row, start, end, ...) that hold frames."""
    return [sp for sp in spans or [] if sp[2] > sp[1]]


def _per_turn(encoder: nn.Module, x: torch.Tensor, spans, read=None) -> torch.Tensor:
    """A frozen encoder (in float32, no gradient) over each user turn of `x` [B, C, S] (codes or feature
    rows), one pass for all turns: `spans` (non-empty, from `_turns`) -> [B, S, H], zeros outside them.
    `read` maps the encoder's features first (e.g. to its character posteriors)."""
    lengths = torch.tensor([e - a for _, a, e, *_ in spans])
    turns = x.new_zeros(len(spans), x.shape[1], int(lengths.max()))
    for i, (b, a, e, *_) in enumerate(spans):
        turns[i, :, : e - a] = x[b, :, a:e]
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        feats = encoder(turns.float() if turns.is_floating_point() else turns, lengths.to(x.device))
        feats = read(feats) if read is not None else feats
    out = feats.new_zeros(x.shape[0], x.shape[2], feats.shape[-1])
    for i, (b, a, e, *_) in enumerate(spans):
        out[b, a:e] = feats[i, : e - a]
    return out


class SpeechLMConfig(PretrainedConfig):
    """Backbone size (Llama fields) plus what ties the model to its codec and tokenizer."""

    model_type = "voice_speechlm"

    def __init__(self, text_vocab_size: int = 49152, num_codebooks: int = 8, codebook_size: int = 1024,
                 codec_dim: int = 128, codec_id: str = "", delays: tuple[int, ...] | list[int] | None = None,
                 text_lead: int = 2, heard_codebooks: int = 0, text_align: str = "ahead", hidden_size: int = 384, intermediate_size: int = 1024,
                 num_hidden_layers: int = 6, num_attention_heads: int = 6, num_key_value_heads: int = 2,
                 max_position_embeddings: int = 2048, rope_theta: float = 10000.0, rms_norm_eps: float = 1e-5,
                 initializer_range: float = 0.02, tie_word_embeddings: bool = True,
                 text_token_ids: list[int] | None = None, hearing: dict | None = None,
                 hearing_input: str = "features", heard_text: bool = False, heard_words: list[str] | None = None,
                 heard_snap: float = SNAP_DISTANCE, heard_snap_by: str = "spelling", **kwargs) -> None:
        if text_token_ids is not None and len(text_token_ids) != text_vocab_size:
            raise ValueError(f"text_vocab_size {text_vocab_size} != {len(text_token_ids)} kept tokenizer ids")
        self.text_vocab_size = text_vocab_size          # the model's text ids (SmolLM2's whole tokenizer: 49152)
        self.text_token_ids = text_token_ids            # the tokenizer ids kept, in order (voice.speechlm.text); None: all
        self.num_codebooks = num_codebooks              # codebooks the LM reads and writes (a prefix of the codec's)
        self.codebook_size = codebook_size              # entries per codebook
        self.codec_dim = codec_dim                      # codebook vector size of the codec
        self.codec_id = codec_id                        # the codec the codes come from (its cache id)
        self.delays = list(delays) if delays is not None else [0] + [1] * (num_codebooks - 1)
        self.text_lead = text_lead                      # steps the answer's words start before its audio
        self.heard_codebooks = heard_codebooks          # codebooks of the user's speech it reads (0: all)
        self.text_align = text_align                    # "ahead": the answer's words first; "words": each at its audio
        # a frozen hearing encoder's HearingConfig (as a dict); or {"kind": "ear", "dim", "chunk", "context"}: the
        # user's frames also read through Whisper's encoder (voice.speechlm.whisper_ear), and with "encoder" (an ear
        # encoder's HearingConfig) also through a frozen CTC-trained encoder of those features; or None
        self.hearing = hearing
        self.hearing_input = hearing_input              # what the LM reads of it: "features" or "chars" (its CTC posteriors)
        # the hearing encoder's greedy spelling of the user's words goes in the user block's text stream as it is
        # heard (voice.speechlm.heard); needs a hearing encoder (of codes, or an ear encoder)
        self.heard_text = heard_text
        # the words its training questions use, the most frequent first: a heard word that is none of them is snapped
        # to the nearest within heard_snap (voice.speechlm.lexicon); None: read as spelled
        self.heard_words = list(heard_words) if heard_words else None
        self.heard_snap = heard_snap
        self.heard_snap_by = heard_snap_by              # "spelling": the nearest by letters; "ctc": by the CTC's posteriors
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def reads_ear(self) -> bool:
        """The model reads the Whisper ear's features of the user's audio (not a hearing encoder of codes)."""
        return bool(self.hearing) and self.hearing.get("kind") == "ear"

    @property
    def ear_config(self):
        from voice.speechlm.whisper_ear import EarConfig

        return EarConfig(chunk=int(self.hearing["chunk"]), context=int(self.hearing["context"])) if self.reads_ear else None

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.text_vocab_size, self.num_codebooks, self.codebook_size)

    @property
    def layout(self) -> Layout:
        return Layout(tuple(self.delays), self.text_lead, self.heard_codebooks, self.text_align)

    def backbone_config(self) -> LlamaConfig:
        return LlamaConfig(vocab_size=self.vocab.text_stream_size, hidden_size=self.hidden_size,
                           intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
                           num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
                           max_position_embeddings=self.max_position_embeddings, rms_norm_eps=self.rms_norm_eps,
                           rope_theta=self.rope_theta, initializer_range=self.initializer_range,
                           tie_word_embeddings=False, attention_bias=False, mlp_bias=False)


class SpeechLM(PreTrainedModel):
    """text ids [B, S] + codes [B, K, S] -> text logits [B, S, V] and audio logits [B, S, K, N + 1]."""

    config_class = SpeechLMConfig
    base_model_prefix = "speechlm"
    _tied_weights_keys = {"text_head.weight": "backbone.embed_tokens.weight"}

    def __init__(self, config: SpeechLMConfig, codebooks: torch.Tensor | None = None) -> None:
        super().__init__(config)
        k, n, d, h = config.num_codebooks, config.codebook_size, config.codec_dim, config.hidden_size
        self.backbone = LlamaModel(config.backbone_config())
        # the codec's codebook vectors, one row per entry plus a zero row for "no code": [K, N + 1, D]
        table = torch.zeros(k, n + 1, d)
        if codebooks is not None:
            if tuple(codebooks.shape) != (k, n, d):
                raise ValueError(f"codebooks must be [{k}, {n}, {d}], got {tuple(codebooks.shape)}")
            table[:, :n] = codebooks
        self.register_buffer("codebooks", table)
        self.audio_proj = nn.Parameter(torch.empty(k, d, h))     # per codebook: codec vector -> model width
        self.audio_none = nn.Parameter(torch.zeros(k, h))        # "no code" for codebook k at this step
        self.text_head = nn.Linear(h, config.vocab.text_stream_size, bias=False)
        self.audio_head = nn.Linear(h, k * (n + 1), bias=False)
        self.hearing_blank = nn.Parameter(torch.zeros(h))        # CTC blank of the training-only hearing loss
        self.hearing = self.hearing_proj = None
        self.ear_encoder = self.ear_encoder_proj = None
        if config.reads_ear:                                      # the Whisper ear's features, through an adapter
            d = int(config.hearing["dim"])
            self.hearing_proj = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h), nn.GELU(), nn.Linear(h, h))
            if config.hearing.get("encoder"):                     # and a frozen ear encoder's features of them
                from voice.speechlm.hearing import HearingConfig, HearingEncoder

                enc = HearingConfig(**config.hearing["encoder"])
                if enc.input_dim != d:
                    raise ValueError(f"the ear encoder reads {enc.input_dim}-wide rows, the ear gives {d}")
                self.ear_encoder = HearingEncoder(enc).requires_grad_(False)
                self.ear_encoder_proj = nn.Linear(enc.hidden, h, bias=False)
        elif config.hearing:                                      # the user's frames also read by a frozen encoder
            from voice.speechlm.hearing import HearingConfig, HearingEncoder

            self.hearing = HearingEncoder(HearingConfig(**config.hearing)).requires_grad_(False)
            if config.hearing_input not in ("features", "chars"):
                raise ValueError(f"hearing_input must be features or chars, not {config.hearing_input!r}")
            width = self.hearing.config.hidden if config.hearing_input == "features" else self.hearing.head.out_features
            self.hearing_proj = nn.Linear(width, h, bias=False)
        if config.heard_text and self.speller is None:
            raise ValueError("heard_text needs a hearing encoder (--hearing-encoder) whose spelling the LM reads")
        self.post_init()
        self._init_audio()

    def _init_audio(self) -> None:
        if self.codebooks.is_meta:        # from_pretrained builds on the meta device, then loads the weights
            return
        with torch.no_grad():
            scale = float(self.codebooks[:, :-1].std()) if self.codebooks.abs().sum() > 0 else 1.0
            shared = torch.randn(self.config.codec_dim, self.config.hidden_size) / (scale * math.sqrt(self.config.codec_dim))
            self.audio_proj.copy_(shared[None].expand_as(self.audio_proj) * self.config.initializer_range * 25)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, self.config.initializer_range)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.text_head

    @property
    def speller(self):
        """The frozen encoder whose CTC spelling is the user's heard text (the ear encoder, or the encoder of codes)."""
        return self.ear_encoder if self.ear_encoder is not None else self.hearing

    def check_ids(self, text: torch.Tensor, audio: torch.Tensor) -> None:
        """Raise ValueError for ids outside the vocabulary (never index out of range)."""
        v = self.config.vocab
        if text.numel() and (int(text.min()) < 0 or int(text.max()) >= v.text_stream_size):
            raise ValueError(f"text-stream ids must be in 0..{v.text_stream_size - 1}, got "
                             f"{int(text.min())}..{int(text.max())}")
        if audio.numel() and (int(audio.min()) < 0 or int(audio.max()) > v.audio_none):
            raise ValueError(f"codes must be in 0..{v.codebook_size - 1} (or {v.audio_none} for none), got "
                             f"{int(audio.min())}..{int(audio.max())}")

    def user_features(self, audio: torch.Tensor, spans) -> torch.Tensor | None:
        """The hearing encoder's features at the user's frames: `spans` (batch row, start, end, ...) of
        user speech in `audio` [B, K, S]; each span is one whole user turn. [B, S, H_enc] or None."""
        spans = _turns(spans)
        if self.hearing is None or not spans:
            return None
        return _per_turn(self.hearing, audio[:, : self.hearing.config.num_codebooks], spans, self.hearing_read)

    def with_ear_encoder(self, ear: torch.Tensor, spans) -> torch.Tensor:
        """The ear's rows [B, S, D] (zeros outside user turns) -> [B, S, D + H_enc]: the rows and, for a
        model with an ear encoder, its features of each user turn (`spans`, as in `user_features`)."""
        if self.ear_encoder is None:
            return ear
        spans = _turns(spans)
        if spans:
            enc = _per_turn(self.ear_encoder, ear.transpose(1, 2), spans).to(ear.dtype)
        else:
            enc = ear.new_zeros(*ear.shape[:2], self.ear_encoder.config.hidden)
        return torch.cat([ear, enc], -1)

    def hearing_read(self, features: torch.Tensor) -> torch.Tensor:
        """What the LM reads of the encoder's features: themselves, or its character posteriors
        (`hearing_input="chars"`: only what it spells, nothing of the voice)."""
        if self.config.hearing_input == "chars":
            return self.hearing.ctc_logits(features).softmax(-1)
        return features

    def embed(self, text: torch.Tensor, audio: torch.Tensor, user: torch.Tensor | None = None) -> torch.Tensor:
        """text [B, S], audio [B, K, S] (and the hearing encoder's features [B, S, H_enc] at the user's
        frames, zeros elsewhere) -> step embeddings [B, S, H]."""
        x = self.backbone.embed_tokens(text)                                     # [B, S, H]
        if user is not None and self.hearing_proj is not None:
            if self.config.reads_ear:           # the adapter has biases: only frames with features take part
                d = int(self.config.hearing["dim"])
                rows = user[..., :d]
                heard = self.hearing_proj(rows) * (rows != 0).any(-1, keepdim=True).to(x.dtype)
                if self.ear_encoder_proj is not None:      # the ear encoder's features follow the rows
                    heard = heard + self.ear_encoder_proj(user[..., d:])
            else:
                heard = self.hearing_proj(user)
            x = x + heard
        latents = torch.stack([self.codebooks[k][audio[:, k]] for k in range(audio.shape[1])], 1)  # [B, K, S, D]
        x = x + torch.einsum("bksd,kdh->bsh", latents, self.audio_proj)
        none = (audio == self.config.vocab.audio_none).to(x.dtype)              # [B, K, S]
        return x + torch.einsum("bks,kh->bsh", none, self.audio_none)

    def heads(self, hidden: torch.Tensor, text: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """hidden [B, S, H] -> text logits [B, S, V] (or None) and audio logits [B, S, K, N + 1]."""
        k, n = self.config.num_codebooks, self.config.codebook_size
        audio = self.audio_head(hidden).unflatten(-1, (k, n + 1))
        return (self.text_head(hidden) if text else None), audio

    def audio_logits(self, hidden: torch.Tensor, codebooks: int) -> torch.Tensor:
        """hidden [..., H] -> the logits of the first `codebooks` codebooks only [..., codebooks, N + 1]: a step
        reads the rows of the audio head it needs (none while the words lead, fewer while a stair fills)."""
        n = self.config.codebook_size
        weight = self.audio_head.weight[: codebooks * (n + 1)]
        return torch.nn.functional.linear(hidden, weight).unflatten(-1, (codebooks, n + 1))

    def forward(self, text_ids: torch.Tensor, audio_codes: torch.Tensor, attention_mask: torch.Tensor | None = None,
                targets=None, text_weight: float = 1.0, hearing_weight: float = 0.0, user_spans=None,
                user_ear: torch.Tensor | None = None, **kwargs):
        """Logits of both heads at every step; or, given `targets` (a `voice.speechlm.batch.Batch`), the
        training loss, with the heads applied only where there are targets (the text head is the costly one).
        `user_spans` (or the targets' own) say where the user's turns are, for the hearing encoder;
        `user_ear` (or the targets' own) is the Whisper ear's features [B, S, D], for a model that reads them."""
        self.check_ids(text_ids, audio_codes)
        if user_spans is None and targets is not None:
            user_spans = targets.user_spans
        if self.config.reads_ear:
            user = user_ear if user_ear is not None or targets is None else targets.user_ear
            if user is None and user_spans:
                raise ValueError("this model hears through the Whisper ear: give the user turns' ear features")
            if user is not None:
                user = self.with_ear_encoder(user, user_spans)
        else:
            user = self.user_features(audio_codes, user_spans)
        hidden = self.backbone(inputs_embeds=self.embed(text_ids, audio_codes, user), attention_mask=attention_mask,
                               use_cache=False).last_hidden_state
        if targets is not None:
            from voice.speechlm.batch import loss_from_hidden

            return loss_from_hidden(self, hidden, targets, text_weight, hearing_weight)
        return self.heads(hidden)
