"""pg-platform's policy pack: validators in validators.py, the pack in __main__.py."""
