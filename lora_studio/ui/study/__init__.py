"""The Study tab: the LoRA paper's rank study (engine.sweep) with live curves and its summary."""

from lora_studio.ui.study.view import StudyTab

__all__ = ["StudyTab"]
