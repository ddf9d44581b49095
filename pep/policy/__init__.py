"""The policy directory: files, snapshot, compile, indexes, request values, evaluation, store, watcher, fmt."""
