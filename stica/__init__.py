"""stica: Space-Time Crop & Attend, self-supervised audio-visual video representation learning."""

__version__ = "0.1.0"
