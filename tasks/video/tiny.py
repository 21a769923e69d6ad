"""A tiny, randomly initialised LLaVA-NeXT-Video built offline (for tests and smoke runs).

Same architecture as LLaVA-NeXT-Video 7B (CLIP vision tower, 2x2 average pooling, projector,
Llama language model with grouped-query attention), scaled down: 84 x 84 frames, 14-pixel patches
→ 6 x 6 patches → 3 x 3 = 9 video tokens per frame (the 7B model: 336 / 14 = 24 → 12 x 12 = 144).
The tokenizer is a byte-level BPE trained here on a few sentences. Its answers are random: it
exercises the pipeline, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

TOKENS_PER_FRAME = 9
_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: ASSISTANT:",
    "Answer with the option's letter from the given choices directly. Only give the best option. Best option: (",
    "What colour is the moving square? Which direction does it move? A. B. C. D. E. (A) (B) (C) (D)",
]


def build_tiny_video_model(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random LLaVA-NeXT-Video model and its tokenizer to ``folder``; return the folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration, PreTrainedTokenizerFast

    folder = Path(folder)
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<video>", "<image>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", additional_special_tokens=["<video>", "<image>"])
    config = LlavaNextVideoConfig(
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=3),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=84, patch_size=14, projection_dim=32),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, image_grid_pinpoints=[[84, 84]], spatial_pool_stride=2,
    )
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 3
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
