"""Airlock's kit for agent authors.

Inside an agent image only ``agents._helper`` is needed (it uses the standard library alone):

    from agents import serve

    def handle(capability, payload):
        return {"upper": payload["text"].upper()}

    serve(handle)
"""

from agents._helper import AgentError, serve

__all__ = ["AgentError", "serve"]
