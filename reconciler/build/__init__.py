"""Building images from a Containerfile: parse (pure), context, layer writing, the builder."""
