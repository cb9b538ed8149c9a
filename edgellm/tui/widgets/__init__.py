"""The TUI's widgets: chat list, chat view, one message, the prompt box and the status bar."""
