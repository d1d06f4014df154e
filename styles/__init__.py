"""Styles (Textual CSS), one file per screen, shipped inside the wheel."""
