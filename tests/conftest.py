import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model (dequantised once per machine, then cached)."""
    from harness.models import load_model

    model, tokenizer, _ = load_model()
    return model, tokenizer


def tiny_llama(seed: int = 0):
    """A randomly initialised 2-layer Llama with grouped-query attention (4 query / 2 KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, rope_theta=10000.0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma3(seed: int = 0, window: int = 8):
    """A randomly initialised 3-layer Gemma 3 text model: two sliding-window layers, one global."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=512, sliding_window=window,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    )
    return Gemma3ForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder with a random 2-layer Llama and SmolLM2's real tokenizer: `--model DIR` runs in seconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from harness.models import resolve_model

    source = resolve_model("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=640, rope_theta=10000.0,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def three_runs(tmp_path):
    """Fake run directories (full cache, h2o, a NAMM) and their records, for the report tests."""
    from tests.report_runs import three_run_dirs

    return three_run_dirs(tmp_path)
