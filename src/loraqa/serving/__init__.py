"""Serving: the HTTP app (loraqa's routes, OpenAI-compatible routes, Prometheus metrics, the demo
page in static/), its request guard, limits and batcher, and the MCP tool server, all over one
Answerer. Each server checks for its own optional packages when it starts (loraqa/optional.py).
"""
