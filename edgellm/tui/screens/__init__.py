"""The TUI's screens: the main chat screen and the modal ones (model picker, settings, help, dialogs)."""
