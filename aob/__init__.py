"""The aob command line, the launcher (`make up`) and the embedded PostgreSQL and Redis it starts.

Outside the Django project on purpose: the CLI is an HTTP client of the API, the launcher starts
the processes of the stack.
"""
