"""The Spectra tab: the LoRA paper's §7 analysis of the learned update ΔW, live and for saved runs."""
