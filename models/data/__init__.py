"""Data sets read from local files or shipped packages; nothing is downloaded."""
