"""edgeinfer: take a trained network to a phone, a camera or a board."""
__version__ = "0.1.0"
