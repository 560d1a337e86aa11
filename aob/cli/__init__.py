"""The ``aob`` command line: a client of the REST and WebSocket APIs, never of the database.

It imports nothing from the server side, so it works against any AOB deployment it can reach.
"""
