"""Tiny models built from configs (hidden 32-64, 2 layers), saved to a folder: every test runs in seconds."""

from __future__ import annotations

import torch
import transformers as T

VOCAB = 120


def configs():
    common = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    llama = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, **common)
    return {
        "llama": T.LlamaConfig(**llama),
        "mistral": T.MistralConfig(**llama),
        "qwen2": T.Qwen2Config(**llama),
        "gemma": T.GemmaConfig(head_dim=8, **llama),
        "phi3": T.Phi3Config(**llama),
        "gpt2": T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **common),
        "gpt_neox": T.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, **common),
        "opt": T.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                           word_embed_proj_dim=32, max_position_embeddings=64, **common),
        "bert": T.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, vocab_size=VOCAB, pad_token_id=0),
        "roberta": T.RobertaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, vocab_size=VOCAB, pad_token_id=1),
        "distilbert": T.DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=4, vocab_size=VOCAB,
                                         pad_token_id=0),
    }


CAUSAL = ("llama", "mistral", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox", "opt")
ENCODERS = ("bert", "roberta", "distilbert")


def build(arch: str, seed: int = 0, task: str | None = None):
    """A randomly initialised tiny model; causal LM for decoders, sequence classifier for encoders."""
    torch.manual_seed(seed)
    cfg = configs()[arch]
    task = task or ("causal-lm" if arch in CAUSAL else "classification")
    cls = T.AutoModelForCausalLM if task == "causal-lm" else T.AutoModelForSequenceClassification
    model = cls.from_config(cfg).eval()
    with torch.no_grad():  # non-zero biases and norms so that nothing is trivially symmetric
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def inputs(batch: int = 2, seq: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def randomize_adapters(model, seed: int = 2, scale: float = 0.1):
    """Give B non-zero values (it starts at zero) so that the adapter changes the output."""
    from lora_studio.engine.lora import lora_layers

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * scale)
            m.lora_A.copy_(torch.randn(m.lora_A.shape, generator=g) * scale)
    return model


def model_folder(path, arch: str = "llama", task: str | None = None, seed: int = 0):
    """A tiny model saved with the packaged MiniLM's tokenizer (vocab 30522), ready for
    `from_pretrained`: the real loading, tokenizing and exporting code runs on it."""
    import shutil
    from pathlib import Path

    from lora_studio.engine.models import demo_model_path

    torch.manual_seed(seed)
    cfg = configs()[arch]
    for key in ("vocab_size",):
        setattr(cfg, key, 30522)
    cfg.pad_token_id = 0
    if hasattr(cfg, "bos_token_id") and arch in CAUSAL:
        cfg.bos_token_id, cfg.eos_token_id = 101, 102  # [CLS], [SEP]
    task = task or ("causal-lm" if arch in CAUSAL else "classification")
    cls = T.AutoModelForCausalLM if task == "causal-lm" else T.AutoModelForSequenceClassification
    model = cls.from_config(cfg)
    path = Path(path)
    model.save_pretrained(path)
    src = Path(demo_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, path / name)
    return path


def llama_gguf_folder(path, seed: int = 0):
    """A tiny Llama with a Llama-2-style byte-fallback BPE tokenizer (400 tokens, a chat template):
    the kind of folder llama.cpp's converter takes, made without any download."""
    from pathlib import Path

    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    text = ["the quick brown fox jumps over the lazy dog", "low rank adaptation freezes the pretrained model",
            "LoRA Studio merges the update into the base weights"] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                       special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<unk>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<s>assistant:{% endif %}")
    path = Path(path)
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    cfg = T.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=len(fast), pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, max_position_embeddings=128)
    model = T.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(path)
    return path
