"""The speed tricks, in one place: work forked off the event loop or the parser, strings shared between
long-lived views (``compact``), and the garbage collector paused around bulk builds (``gcpause``)."""
