"""The engine: everything that imports torch (model loading, the model runner, the step loop).

``LLMEngine`` is the synchronous step loop; ``AsyncEngine`` drives it from a worker thread and is
what the tiers above use, through the torch-free ``inference.boundary`` types.
"""
