"""Generated code; regenerate with `make proto`, never edit."""
