"""Synthetic people in the native layouts of the four datasets (see ``__main__``)."""
