"""What both tiers' HTTP edges share: the ASGI middleware (origin policy, CORS, request bodies,
cancel on disconnect), the uvicorn configuration, API keys, logging and tracing. Of the tiers it
imports only the boundary's types (``inference.boundary``), never an engine or the API."""
