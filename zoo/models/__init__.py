"""Model families. Each module registers its architectures with :func:`zoo.register_model` on import."""
