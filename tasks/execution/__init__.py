"""Running tasks: the drainer (claims, calls, settles), one given task, drain slots, the retry decision.

Not services: this package does network I/O; each database step it takes is an atomic service.
"""
