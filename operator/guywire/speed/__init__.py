"""The speed tricks, in one place: work forked off the event loop or the parser (``forked_call``), strings
shared between long-lived views (``compact``), and the garbage collector paused around bulk builds
(``gcpause``)."""
