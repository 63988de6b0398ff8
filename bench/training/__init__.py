"""The one training loop, the same for every technique (`loop`), and the memory levers it applies (`levers`)."""
