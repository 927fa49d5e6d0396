"""The inference tier's own HTTP service: the app's assembly (``app``), its endpoints (``endpoints``, with
``streams`` and ``replies``), what they share (``state``), keys (``auth``), settings, and the wire format
(``wire``)."""
