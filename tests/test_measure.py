"""bench's measuring tools: phase timing, peak memory on CPU, KV bytes per token from a config."""

import json
import time

import pytest
import torch
from transformers import LlamaConfig

from harness.measure import Clock, kv_bytes_per_token, median, peak_memory


def test_clock_times_a_phase_on_cpu():
    clock = Clock("cpu")
    with clock.phase():
        time.sleep(0.05)
    assert 0.045 < clock.seconds < 0.5


def test_peak_memory_on_cpu_is_the_peak_rss_and_grows():
    """In a fresh process: touching a 256 MB block raises the reported peak above the block's size
    (the earlier peak may include freed import-time memory, so the rise can be smaller than 256 MB)."""
    import subprocess
    import sys

    code = ("import json, torch; from harness.measure import peak_memory; a = peak_memory('cpu'); "
            "block = torch.ones(256 * 2**20 // 4); b = peak_memory('cpu'); print(json.dumps([a, b, float(block[-1])]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after, touched = json.loads(out.strip().splitlines()[-1])
    assert before["peak_memory_kind"] == after["peak_memory_kind"] == "cpu_peak_rss" and touched == 1.0
    assert after["peak_memory_mb"] > max(256, before["peak_memory_mb"] + 100), (before, after)


@pytest.mark.parametrize("layers,kv_heads,head_dim,dtype,expect", [
    (32, 8, 128, torch.bfloat16, 2 * 32 * 8 * 128 * 2),  # Llama-3.1-8B: 128 KiB per token in bf16
    (80, 8, 128, torch.bfloat16, 2 * 80 * 8 * 128 * 2),  # Llama-3-70B: 320 KiB
    (30, 3, 64, torch.float32, 2 * 30 * 3 * 64 * 4),  # SmolLM2-135M in fp32
])
def test_kv_bytes_per_token(layers, kv_heads, head_dim, dtype, expect):
    config = LlamaConfig(num_hidden_layers=layers, num_attention_heads=kv_heads * 4, num_key_value_heads=kv_heads,
                         hidden_size=kv_heads * 4 * head_dim, head_dim=head_dim)
    assert kv_bytes_per_token(config, dtype) == expect


def test_median():
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0, 3.0, 10.0]) == 2.5
