"""Command-line interface; see `lstmkit --help`."""
