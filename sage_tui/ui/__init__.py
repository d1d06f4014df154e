"""The Textual user interface. It calls into `sage_tui.core`, never the other way round."""
