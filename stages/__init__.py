"""Thin click commands, one per DVC stage: parse options, load the params section, call stica."""
