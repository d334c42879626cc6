"""The application layer: one use case per command, over the deployment's backends.

Each use case takes the deployment (the backends selected; one backend is a deployment of
one), a request, the `connect` function and, where it shows progress, an observer; it
connects, works, closes and returns a report with a result. The CLI renders that report and
maps it to an exit code. Nothing here prints.
"""
