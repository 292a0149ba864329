"""Real-world degradation synthesis: the Real-ESRGAN second-order model, drawn per sample."""

from realsr_r1.degrade.apply import apply_degradation
from realsr_r1.degrade.describe import describe, from_text, to_text
from realsr_r1.degrade.draw import draw_degradation

__all__ = ["apply_degradation", "describe", "draw_degradation", "from_text", "to_text"]
