"""The inference tier's own HTTP service: the app (``app``) and its wire format (``wire``)."""
