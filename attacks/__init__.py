"""The Executable protocol, its backends, and the attack suite."""
