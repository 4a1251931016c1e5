"""The `vlbridge` command: one generic parser over the typed configs, a subcommand per job (`*_cmd.py`)."""
