"""The deploy package: an HTTP query server in front of any Executable, and the board backend.

``server`` serves predictions over HTTP (stdlib only) from the simulator, the reference
executor or, on a PYNQ board, FINN's generated driver (``board_backend``). The library client
is :class:`~hwbed.fpga.deploy.remote.RemoteExecutable` (``remote``); ``client`` is a command
line over it. ``package`` writes a build's deploy folder.
"""
