"""Modal dialogs that ask the user to confirm something."""
